/**
 * The worker threads of one SQLite driver, shared by all its sessions (the pool's
 * resources). Each worker is an offload connection that takes pipelined calls; the set
 * starts them lazily, replaces one in the background when it is terminated or dies, and
 * closes them all with the driver.
 *
 * Routing: `least()` is the unpinned worker with the fewest calls in flight (reads go
 * there); worker 0 is the writer (autocommit writes go there, one after another); `pin()`
 * gives a worker to one session for a transaction: nothing else is dispatched to it until
 * `unpin()`.
 */
import type { CancelSignal } from '../driver.js';
import { ConnectionLostError } from '../errors.js';
import type { OffloadedConnection } from '../offload/offload-host.js';

/** Starts one worker's connection. */
export type StartWorker = (signal: AbortSignal) => Promise<OffloadedConnection>;

interface Slot {
  connection: OffloadedConnection | undefined;
  starting: Promise<OffloadedConnection> | undefined;
  pinned: boolean;
  /** Calls this set dispatched to the worker and not yet settled. */
  dispatched: number;
  /** Waiting for `dispatched` to reach 0 (a session pinning the worker). */
  readonly drained: Array<() => void>;
}

/** The index of the worker that serves autocommit writes. */
export const WRITER = 0;

export class WorkerSet {
  readonly size: number;
  readonly #start: StartWorker;
  readonly #slots: readonly Slot[];
  /** Aborts the starts still under way when the set closes. */
  readonly #closing = new AbortController();
  /** Waiting for a worker to be unpinned (every worker pinned). */
  readonly #unpinned: Array<() => void> = [];
  #closed = false;

  constructor(size: number, start: StartWorker) {
    this.size = size;
    this.#start = start;
    this.#slots = Array.from({ length: size }, () => ({ connection: undefined, starting: undefined, pinned: false, dispatched: 0, drained: [] }));
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Resolves once worker `index` is open (starting it if needed). */
  connection(index: number): Promise<OffloadedConnection> {
    const slot = this.#slots[index]!;
    const current = slot.connection;
    if (current !== undefined && !current.broken) return Promise.resolve(current);
    if (current !== undefined) this.#retire(slot);
    return (slot.starting ??= this.#open(slot));
  }

  /**
   * The unpinned worker with the fewest calls in flight, or -1 when every worker is pinned.
   * The writer counts one call more: on a tie a read goes elsewhere, so a long read does not
   * hold up the autocommit writes queued behind it on the writer.
   */
  tryLeast(): number {
    const slots = this.#slots;
    let best = -1;
    let fewest = Infinity;
    for (let i = 0; i < slots.length; i++) {
      const slot = slots[i]!;
      const load = i === WRITER ? slot.dispatched + 1 : slot.dispatched;
      if (!slot.pinned && load < fewest) {
        best = i;
        fewest = load;
      }
    }
    return best;
  }

  /** As `tryLeast`, waiting while every worker is pinned (`:memory:`'s one worker in a transaction). */
  async least(signal: CancelSignal | undefined): Promise<number> {
    for (;;) {
      const index = this.tryLeast();
      if (index !== -1) return index;
      await this.#waitFor(this.#unpinned, signal);
    }
  }

  /** Counts a call on worker `index` while it runs, for `least()` and `pin()`. */
  async dispatch<T>(index: number, work: (connection: OffloadedConnection) => Promise<T>): Promise<T> {
    const slot = this.#slots[index]!;
    slot.dispatched++;
    try {
      const live = slot.connection;
      return await work(live !== undefined && !live.broken ? live : await this.connection(index));
    } finally {
      if (--slot.dispatched === 0) for (const wake of slot.drained.splice(0)) wake();
      // Terminated or dead: its replacement starts now, in the background.
      if (slot.connection?.broken === true) this.#replace(slot);
    }
  }

  /**
   * Gives an unpinned worker (the least busy) to one caller: nothing else is dispatched to
   * it until `unpin`; resolves once its calls in flight are done.
   */
  async pin(signal: CancelSignal | undefined): Promise<number> {
    const index = await this.least(signal);
    const slot = this.#slots[index]!;
    slot.pinned = true;
    try {
      while (slot.dispatched > 0) await this.#waitFor(slot.drained, signal);
    } catch (error) {
      this.unpin(index);
      throw error;
    }
    return index;
  }

  unpin(index: number): void {
    const slot = this.#slots[index]!;
    if (!slot.pinned) return;
    slot.pinned = false;
    for (const wake of this.#unpinned.splice(0)) wake();
    if (slot.connection?.broken === true) this.#replace(slot);
  }

  /** Closes every worker (a transaction still open rolls back). No thread is left. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#closing.abort(new ConnectionLostError('The SQLite driver was closed.', { cause: undefined }));
    const closing: Array<Promise<void>> = [];
    for (const slot of this.#slots) {
      const { connection, starting } = slot;
      slot.connection = undefined;
      slot.starting = undefined;
      if (connection !== undefined) closing.push(connection.close());
      if (starting !== undefined) closing.push(starting.then((started) => started.close(), () => {}));
    }
    await Promise.all(closing);
  }

  #open(slot: Slot): Promise<OffloadedConnection> {
    if (this.#closed) return Promise.reject(new ConnectionLostError('The SQLite driver is closed.', { cause: undefined }));
    const starting = this.#start(this.#closing.signal).then(
      (connection) => {
        if (slot.starting !== starting) {
          // Closed (or replaced) while it started.
          void connection.close();
          throw new ConnectionLostError('The SQLite driver is closed.', { cause: undefined });
        }
        slot.starting = undefined;
        slot.connection = connection;
        // An idle worker that dies is replaced at once.
        connection.onBroken(() => {
          if (slot.connection === connection && !slot.pinned) this.#replace(slot);
        });
        return connection;
      },
      (error: unknown) => {
        // The next call tries again.
        if (slot.starting === starting) slot.starting = undefined;
        throw error;
      },
    );
    return starting;
  }

  /** Drops a broken worker and starts its successor in the background. */
  #replace(slot: Slot): void {
    if (slot.connection === undefined || !slot.connection.broken) return;
    this.#retire(slot);
    if (this.#closed || slot.starting !== undefined) return;
    // A failure here reaches the next caller, which starts another attempt.
    (slot.starting = this.#open(slot)).catch(() => {});
  }

  #retire(slot: Slot): void {
    const old = slot.connection;
    slot.connection = undefined;
    // Already terminated or gone: close() only makes sure and settles with its exit.
    void old?.close();
  }

  #waitFor(queue: Array<() => void>, signal: CancelSignal | undefined): Promise<void> {
    if (signal?.aborted === true) return Promise.reject(signal.reason);
    return new Promise<void>((resolve, reject) => {
      const onAbort = (): void => {
        const index = queue.indexOf(wake);
        if (index !== -1) queue.splice(index, 1);
        reject(signal!.reason);
      };
      const wake = (): void => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      queue.push(wake);
    });
  }
}
