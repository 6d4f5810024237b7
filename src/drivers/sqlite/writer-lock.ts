import type { CancelSignal } from '../driver.js';
/**
 * SQLite lets one connection write at a time. Left to itself, a second writer spins on
 * SQLITE_BUSY (sleeping and retrying inside its worker until the busy timeout), which under
 * load wastes workers and ends in BUSY errors. Instead, every connection to one database
 * file in this process queues here, first come first served, before it writes: the lock is
 * handed from one writer to the next as soon as the first lets go.
 */

interface Waiter {
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
  cleanup: () => void;
}

/** A FIFO async mutex. */
export class WriterLock {
  #held = false;
  readonly #waiters: Waiter[] = [];

  /** True while someone holds it. */
  get held(): boolean {
    return this.#held;
  }

  /** Waiting callers. */
  get waiting(): number {
    return this.#waiters.length;
  }

  /** Takes the lock now if it is free and nobody waits. */
  tryAcquire(): boolean {
    if (this.#held || this.#waiters.length > 0) return false;
    this.#held = true;
    return true;
  }

  /**
   * Resolves once the caller holds the lock. Rejects with `signal.reason` when the signal
   * aborts first, or with `onTimeout()` after `timeoutMs`; either way the caller leaves the
   * queue at once and never gets the lock.
   */
  acquire(signal: CancelSignal | undefined, timeoutMs: number, onTimeout: () => unknown): Promise<void> {
    if (signal?.aborted === true) return Promise.reject(signal.reason);
    if (this.tryAcquire()) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const leave = (error: unknown): void => {
        const index = this.#waiters.indexOf(waiter);
        if (index === -1) return;
        this.#waiters.splice(index, 1);
        waiter.cleanup();
        reject(error);
      };
      const onAbort = (): void => leave(signal!.reason);
      const timer = timeoutMs === Infinity ? undefined : setTimeout(() => leave(onTimeout()), timeoutMs);
      signal?.addEventListener('abort', onAbort, { once: true });
      const waiter: Waiter = {
        resolve,
        reject,
        cleanup: () => {
          clearTimeout(timer);
          signal?.removeEventListener('abort', onAbort);
        },
      };
      this.#waiters.push(waiter);
    });
  }

  /** Lets go: the longest waiter gets the lock at once (it is never free in between). */
  release(): void {
    if (!this.#held) throw new Error('WriterLock released while not held');
    const next = this.#waiters.shift();
    if (next === undefined) {
      this.#held = false;
      return;
    }
    next.cleanup();
    next.resolve();
  }
}

/** One lock per database file in this process, shared by every driver that opens it. */
const locks = new Map<string, { readonly lock: WriterLock; users: number }>();

/** The lock of the database at `path` (absolute); give it back with `releaseWriterLock`. */
export function writerLockFor(path: string): WriterLock {
  let entry = locks.get(path);
  if (entry === undefined) {
    entry = { lock: new WriterLock(), users: 0 };
    locks.set(path, entry);
  }
  entry.users++;
  return entry.lock;
}

export function releaseWriterLock(path: string): void {
  const entry = locks.get(path);
  if (entry === undefined) return;
  entry.users--;
  if (entry.users <= 0 && !entry.lock.held && entry.lock.waiting === 0) locks.delete(path);
}
