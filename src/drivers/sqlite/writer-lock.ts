import type { CancelSignal } from '../driver.js';
/**
 * SQLite lets one connection write at a time. Left to itself, a second writer spins on
 * SQLITE_BUSY (sleeping and retrying inside its worker until the busy timeout), which under
 * load wastes workers and ends in BUSY errors. Instead, every writer of one database file in
 * this process queues here, first come first served, before it writes.
 *
 * Two modes. Autocommit writes take it *shared*: they all run on one worker of their driver
 * (pipelined, one after another inside SQLite), so they never contend with each other, only
 * with transactions; shared holders must therefore be of the same `owner` (one driver's
 * writer worker). A transaction takes it *exclusive*: from its BEGIN (it waits until no
 * autocommit write is in flight) until its end. Strictly FIFO: a shared request arriving
 * behind a waiting exclusive one waits behind it, so a transaction is not starved.
 */

type Mode = { readonly kind: 'exclusive' } | { readonly kind: 'shared'; readonly owner: object };

interface Waiter {
  readonly mode: Mode;
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
  cleanup: () => void;
}

const EXCLUSIVE: Mode = { kind: 'exclusive' };

/** A FIFO async shared/exclusive lock. */
export class WriterLock {
  #exclusive = false;
  #shared = 0;
  #sharedOwner: object | undefined;
  readonly #waiters: Waiter[] = [];

  /** True while someone holds it, in either mode. */
  get held(): boolean {
    return this.#exclusive || this.#shared > 0;
  }

  /** Waiting callers. */
  get waiting(): number {
    return this.#waiters.length;
  }

  /** Takes the lock exclusively now if it is free and nobody waits. */
  tryAcquire(): boolean {
    return this.#tryTake(EXCLUSIVE);
  }

  /**
   * Resolves once the caller holds the lock exclusively. Rejects with `signal.reason` when
   * the signal aborts first, or with `onTimeout()` after `timeoutMs`; either way the caller
   * leaves the queue at once and never gets the lock.
   */
  acquire(signal: CancelSignal | undefined, timeoutMs: number, onTimeout: () => unknown): Promise<void> {
    return this.#acquire(EXCLUSIVE, signal, timeoutMs, onTimeout);
  }

  /** As `acquire`, shared with other holders of the same `owner`. */
  acquireShared(owner: object, signal: CancelSignal | undefined, timeoutMs: number, onTimeout: () => unknown): Promise<void> {
    return this.#acquire({ kind: 'shared', owner }, signal, timeoutMs, onTimeout);
  }

  /** Lets go of an exclusive hold: the waiters at the head of the queue get the lock at once. */
  release(): void {
    if (!this.#exclusive) throw new Error('WriterLock released while not held exclusively');
    this.#exclusive = false;
    this.#grant();
  }

  /** Lets go of one shared hold. */
  releaseShared(): void {
    if (this.#shared <= 0) throw new Error('WriterLock shared hold released while none is held');
    if (--this.#shared === 0) this.#sharedOwner = undefined;
    this.#grant();
  }

  #acquire(mode: Mode, signal: CancelSignal | undefined, timeoutMs: number, onTimeout: () => unknown): Promise<void> {
    if (signal?.aborted === true) return Promise.reject(signal.reason);
    if (this.#tryTake(mode)) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const leave = (error: unknown): void => {
        const index = this.#waiters.indexOf(waiter);
        if (index === -1) return;
        this.#waiters.splice(index, 1);
        waiter.cleanup();
        reject(error);
        // A shared waiter behind it may now be first and compatible.
        if (index === 0) this.#grant();
      };
      const onAbort = (): void => leave(signal!.reason);
      const timer = timeoutMs === Infinity ? undefined : setTimeout(() => leave(onTimeout()), timeoutMs);
      signal?.addEventListener('abort', onAbort, { once: true });
      const waiter: Waiter = {
        mode,
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

  #compatible(mode: Mode): boolean {
    if (this.#exclusive) return false;
    if (mode.kind === 'exclusive') return this.#shared === 0;
    return this.#shared === 0 || this.#sharedOwner === mode.owner;
  }

  #take(mode: Mode): void {
    if (mode.kind === 'exclusive') {
      this.#exclusive = true;
      return;
    }
    this.#shared++;
    this.#sharedOwner = mode.owner;
  }

  #tryTake(mode: Mode): boolean {
    if (this.#waiters.length > 0 || !this.#compatible(mode)) return false;
    this.#take(mode);
    return true;
  }

  /** Hands the lock to the waiters at the head of the queue, as many as are compatible. */
  #grant(): void {
    for (let next = this.#waiters[0]; next !== undefined && this.#compatible(next.mode); next = this.#waiters[0]) {
      this.#waiters.shift();
      this.#take(next.mode);
      next.cleanup();
      next.resolve();
    }
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
