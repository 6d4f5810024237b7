/**
 * What the pool leases for SQLite: a session, not a thread. Sessions share their driver's
 * `WorkerSet`; a session holds nothing between statements except, during a transaction, the
 * worker it pinned.
 *
 * - A read goes to the unpinned worker with the fewest calls in flight (pipelined).
 * - An autocommit write goes to the writer worker, holding the write lock *shared*: writes
 *   of this driver follow each other on that one worker, so they never meet SQLITE_BUSY.
 * - BEGIN (and a SAVEPOINT outside a transaction) takes the write lock *exclusively* (it
 *   waits until no autocommit write is in flight), pins a worker once its calls in flight
 *   are done, and keeps both until COMMIT, ROLLBACK or END, or the session's reset/close.
 *
 * A read or autocommit write that never started because its worker was lost (another
 * session's statement past its deadline got the thread terminated) is sent again to a
 * live worker: it never reached the database, so this is safe even for a write. A session
 * whose pinned worker is lost is broken: its transaction is gone (SQLite rolled it back).
 *
 * A worker terminated while it holds SQLite's file lock keeps it until its thread is gone (a
 * statement in native code runs to its end), so the write lock passes on only then: the
 * next writer starts at once instead of spinning on SQLITE_BUSY.
 */
import type { CancelSignal, DriverConnection, RunOptions, StatementResult } from '../driver.js';
import { ConnectionHealth } from '../connection-health.js';
import { ConnectionLostError, NotStartedError } from '../errors.js';
import type { OffloadedConnection } from '../offload/offload-host.js';
import { busyError, isFatalSqliteError } from './sqlite-errors.js';
import { statementKind } from './statement-kind.js';
import { WRITER, type WorkerSet } from './worker-set.js';
import type { WriterLock } from './writer-lock.js';

/** The pinned worker of a session's open transaction. */
interface Pinned {
  readonly index: number;
  readonly connection: OffloadedConnection;
}

export class SqliteSession implements DriverConnection {
  readonly #workers: WorkerSet;
  readonly #lock: WriterLock;
  readonly #busyTimeoutMs: number;
  readonly #target: string;
  readonly #health = new ConnectionHealth();
  #transaction: Pinned | undefined;
  /** A statement of the transaction failed in a way that leaves its worker untrustworthy. */
  #fatal = false;
  #closed = false;

  constructor(workers: WorkerSet, lock: WriterLock, busyTimeoutMs: number, target: string) {
    this.#workers = workers;
    this.#lock = lock;
    this.#busyTimeoutMs = busyTimeoutMs;
    this.#target = target;
  }

  get broken(): boolean {
    return this.#fatal || this.#closed || this.#transaction?.connection.broken === true;
  }

  onBroken(listener: (error: unknown) => void): void {
    this.#health.onBroken(listener);
  }

  run<Row>(sql: string, parameters: readonly unknown[], options?: RunOptions): Promise<StatementResult<Row>> {
    if (this.#closed) return Promise.reject(new ConnectionLostError('This SQLite session is closed.', { cause: undefined }));
    const kind = statementKind(sql);
    const transaction = this.#transaction;
    if (transaction !== undefined) return this.#inTransaction<Row>(transaction, kind === 'end', sql, parameters, options);
    switch (kind) {
      case 'read':
      case 'end': // no transaction of ours: SQLite refuses it on any worker
        return this.#read<Row>(sql, parameters, options);
      case 'write':
        return this.#write<Row>(sql, parameters, options);
      case 'begin':
        return this.#begin<Row>(sql, parameters, options);
    }
  }

  async ping(options?: RunOptions): Promise<void> {
    const transaction = this.#transaction;
    if (transaction !== undefined) return transaction.connection.ping(options);
    const workers = this.#workers;
    const index = workers.tryLeast();
    await workers.dispatch(index !== -1 ? index : await workers.least(options?.signal), (connection) => connection.ping(options));
  }

  /** Rolls back a transaction left open, and gives its worker back. */
  async reset(): Promise<void> {
    const transaction = this.#transaction;
    if (transaction === undefined) return;
    try {
      await transaction.connection.reset();
    } catch (error) {
      this.#fatal = true;
      throw error;
    } finally {
      this.#endTransaction(transaction);
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const transaction = this.#transaction;
    if (transaction === undefined) return;
    const connection = transaction.connection;
    try {
      // The worker is shared: roll back on it, unless a statement still runs there (a
      // deadline given up on), which would hold the rollback up: end that thread instead.
      if (connection.inFlight > 0) void connection.close();
      else await connection.reset();
    } catch {
      // A worker that cannot roll back is broken: the set replaces it.
    } finally {
      this.#endTransaction(transaction);
    }
  }

  async #read<Row>(sql: string, parameters: readonly unknown[], options: RunOptions | undefined): Promise<StatementResult<Row>> {
    const workers = this.#workers;
    for (let attempt = 0; ; attempt++) {
      let index = workers.tryLeast();
      if (index === -1) index = await workers.least(options?.signal);
      try {
        return await workers.dispatch(index, (connection) => connection.run<Row>(sql, parameters, options));
      } catch (error) {
        // Never reached the database: safe to send again, to a live worker.
        if (!(error instanceof NotStartedError) || attempt >= workers.size + 1) throw error;
      }
    }
  }

  async #write<Row>(sql: string, parameters: readonly unknown[], options: RunOptions | undefined): Promise<StatementResult<Row>> {
    const signal = options?.signal;
    await this.#lock.acquireShared(this.#workers, signal, this.#busyTimeoutMs, () => this.#busy());
    let used: OffloadedConnection | undefined;
    try {
      for (let attempt = 0; ; attempt++) {
        try {
          return await this.#workers.dispatch(WRITER, (connection) => {
            used = connection;
            return connection.run<Row>(sql, parameters, options);
          });
        } catch (error) {
          if (!(error instanceof NotStartedError) || attempt >= 3 || used === undefined) throw error;
          // The lost writer may hold SQLite's file lock until its thread is gone.
          await untilSettled(used.exited, signal);
        }
      }
    } finally {
      this.#releaseAfter(used, () => this.#lock.releaseShared());
    }
  }

  async #begin<Row>(sql: string, parameters: readonly unknown[], options: RunOptions | undefined): Promise<StatementResult<Row>> {
    const signal = options?.signal;
    const workers = this.#workers;
    await this.#lock.acquire(signal, this.#busyTimeoutMs, () => this.#busy());
    let index = -1;
    let connection: OffloadedConnection | undefined;
    try {
      index = await workers.pin(signal);
      connection = await workers.connection(index);
      const result = await connection.run<Row>(sql, parameters, options);
      const pinned: Pinned = { index, connection };
      this.#transaction = pinned;
      connection.onBroken((error) => {
        if (this.#transaction === pinned) this.#health.markBroken(error);
      });
      return result;
    } catch (error) {
      if (index !== -1) workers.unpin(index);
      this.#releaseAfter(connection, () => this.#lock.release());
      throw error;
    }
  }

  async #inTransaction<Row>(
    transaction: Pinned,
    ends: boolean,
    sql: string,
    parameters: readonly unknown[],
    options: RunOptions | undefined,
  ): Promise<StatementResult<Row>> {
    let result: StatementResult<Row>;
    try {
      result = await transaction.connection.run<Row>(sql, parameters, options);
    } catch (error) {
      if (isFatalSqliteError(error)) this.#fatal = true;
      throw error;
    }
    if (ends) this.#endTransaction(transaction);
    return result;
  }

  /** Unpins the transaction's worker and lets go of the exclusive write lock. */
  #endTransaction(transaction: Pinned): void {
    if (this.#transaction !== transaction) return;
    this.#transaction = undefined;
    this.#workers.unpin(transaction.index);
    this.#releaseAfter(transaction.connection, () => this.#lock.release());
  }

  /** Runs `release` now if `connection` is healthy, else once its thread is gone. */
  #releaseAfter(connection: OffloadedConnection | undefined, release: () => void): void {
    if (connection === undefined || !connection.broken) {
      release();
      return;
    }
    connection.exited.then(release, release);
  }

  #busy(): unknown {
    return busyError(
      `SQLite database ${this.#target}: waited ${this.#busyTimeoutMs} ms (busyTimeoutMs) for its turn at the write lock, ` +
        'which other writers of this process held all that time. Keep transactions short, or retry.',
      { cause: undefined },
    );
  }
}

/** Resolves when `promise` settles; rejects with the signal's reason if it aborts first. */
function untilSettled(promise: Promise<void>, signal: CancelSignal | undefined): Promise<void> {
  if (signal === undefined) return promise;
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<void>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    });
  });
}
