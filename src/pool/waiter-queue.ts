import type { StackHolder } from './lease.js';

/**
 * A caller waiting for a resource. Lives in the FIFO queue (and, when it has a deadline,
 * in the deadline heap) until it is served, times out, aborts or the pool closes.
 */
export interface Waiter<T> {
  /** Settles the caller's promise. Each waiter is settled exactly once. */
  readonly resolve: (value: T) => void;
  readonly reject: (error: unknown) => void;
  /** `performance.now()` when the caller started waiting. */
  readonly enqueuedAt: number;
  /** When the caller gives up, on the `performance.now()` clock; `Infinity` for never. */
  readonly deadline: number;
  readonly signal: AbortSignal | undefined;
  /** Where `acquire` was called, kept only when leak detection is on. */
  readonly stack: StackHolder | undefined;
  onAbort: (() => void) | undefined;
  settled: boolean;
  previous: Waiter<T> | undefined;
  next: Waiter<T> | undefined;
}

/**
 * First come, first served, with removal from anywhere in O(1): a waiter that times out
 * or aborts leaves at once, wherever it stands.
 */
export class WaiterQueue<T> {
  #head: Waiter<T> | undefined = undefined;
  #tail: Waiter<T> | undefined = undefined;
  #length = 0;

  get length(): number {
    return this.#length;
  }

  push(waiter: Waiter<T>): void {
    waiter.previous = this.#tail;
    waiter.next = undefined;
    if (this.#tail === undefined) this.#head = waiter;
    else this.#tail.next = waiter;
    this.#tail = waiter;
    this.#length++;
  }

  /** Takes the longest-waiting caller out of the queue. */
  shift(): Waiter<T> | undefined {
    const waiter = this.#head;
    if (waiter !== undefined) this.remove(waiter);
    return waiter;
  }

  /** Takes a waiter out. The waiter must be in this queue. */
  remove(waiter: Waiter<T>): void {
    if (waiter.previous === undefined) this.#head = waiter.next;
    else waiter.previous.next = waiter.next;
    if (waiter.next === undefined) this.#tail = waiter.previous;
    else waiter.next.previous = waiter.previous;
    waiter.previous = undefined;
    waiter.next = undefined;
    this.#length--;
  }
}
