import type { CompiledQuery, DatabaseConnection, QueryResult } from 'kysely';
import type { CancelSignal, DriverConnection, StatementResult } from '../drivers/driver.js';
import { SluiceError } from '../errors.js';
import type { Lease } from '../pool/index.js';
import { writtenTables } from './cache/query-tables.js';
import { type Deadline, statementSignal } from './deadline-scope.js';
import type { TransactionWrites, WriteObserver, WriteObservers } from './write-observers.js';

/** The deadline for a statement: the scope's, else the default statement timeout, else none. */
export type DeadlineSource = () => Deadline | undefined;

/** Options Kysely 0.29 passes to `acquireConnection`, `executeQuery` and `streamQuery` (0.28 passes none). */
export interface CallOptions {
  readonly signal?: AbortSignal;
}

const EMPTY_RESULT: QueryResult<never> = { rows: [] };

/**
 * One pooled connection as Kysely sees it. Every statement gets the deadline in force
 * (and, on Kysely 0.29, the `execute({ signal })` signal): past it, the statement is
 * cancelled on the server.
 *
 * The caller does not wait for the cancellation: a driver settles only once the server has
 * let go of the statement (bounded by its `cancelGraceMs`), which on a stalled network is
 * the whole grace period. The statement rejects at the deadline; the connection is
 * `settling` until the driver knows its state, and only then runs another statement, or
 * goes back to the pool (or is destroyed).
 */
export class PooledConnection implements DatabaseConnection {
  readonly lease: Lease<DriverConnection>;
  readonly #deadline: DeadlineSource;
  readonly #observers: WriteObservers;
  #settling: Promise<void> | undefined;
  /** Set once the lease is on its way back to the pool. */
  givenBack = false;
  /**
   * A ROLLBACK was skipped because the connection was settling (see rollbackTransaction).
   * Back in the pool, reset() rolls the transaction back; a connection that stays with its
   * holder instead (a `withConnection` scope) must roll it back before its next statement,
   * or that statement would run in, and commit, the failed transaction's work.
   */
  rollbackPending = false;
  /**
   * Set from BEGIN to COMMIT or ROLLBACK of a transaction begun by the driver: the tables
   * its writes changed, told to a query cache when it ends (see write-observers.ts).
   */
  transaction: TransactionWrites | undefined;
  /** Set on a test's pinned transaction (pinned-transaction.ts): every table written while it is open. */
  pinnedWrites: Set<string> | undefined;

  constructor(lease: Lease<DriverConnection>, deadline: DeadlineSource, observers: WriteObservers) {
    this.lease = lease;
    this.#deadline = deadline;
    this.#observers = observers;
  }

  /** Pending while a statement given up on is still being cancelled (or a cursor closed). */
  get settling(): Promise<void> | undefined {
    return this.#settling;
  }

  /** Adds `work` to what must finish before the connection is used again; cleared when done. */
  #settleAfter(work: Promise<unknown>): void {
    const settling = Promise.all([this.#settling, work]).then(noop, noop);
    this.#settling = settling;
    void settling.then(() => {
      if (this.#settling === settling) this.#settling = undefined;
    });
  }

  /** Makes the connection ready for a statement: settled, and any skipped rollback done. */
  async #ready(signal: CancelSignal | undefined): Promise<void> {
    if (this.#settling !== undefined) await this.#settled(signal);
    if (this.rollbackPending) {
      this.rollbackPending = false;
      // Bounded by the driver; a failure leaves the connection in doubt (destroyed on release).
      await this.lease.resource.reset();
    }
  }

  /** Waits until the connection has settled, unless `signal` aborts first. */
  async #settled(signal: CancelSignal | undefined): Promise<void> {
    const settling = this.#settling;
    if (settling === undefined) return;
    if (signal === undefined) return settling;
    if (signal.aborted) throw signal.reason;
    let onAbort: (() => void) | undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        onAbort = () => reject(signal.reason);
        signal.addEventListener('abort', onAbort, { once: true });
        void settling.then(resolve);
      });
    } finally {
      signal.removeEventListener('abort', onAbort!);
    }
  }

  executeQuery<R>(compiledQuery: CompiledQuery, options?: CallOptions): Promise<QueryResult<R>> {
    const observer = this.#observers.current;
    if (observer === undefined) return this.#execute(compiledQuery, options);
    return this.#executeObserved(observer, compiledQuery, options);
  }

  /** A statement run while a query cache listens: its writes are told to the cache (see write-observers.ts). */
  async #executeObserved<R>(observer: WriteObserver, compiledQuery: CompiledQuery, options: CallOptions | undefined): Promise<QueryResult<R>> {
    const tables = writtenTables(compiledQuery.query);
    const transaction = this.transaction;
    if (tables === undefined) {
      if (transaction !== undefined) observer.readInTransaction();
      return this.#execute(compiledQuery, options);
    }
    if (transaction !== undefined) {
      pendingIn(transaction, observer, tables);
      return this.#execute(compiledQuery, options);
    }
    if (this.pinnedWrites !== undefined) for (const table of tables) this.pinnedWrites.add(table);
    try {
      return await this.#execute(compiledQuery, options);
    } finally {
      // A failed statement too: cancelled at its deadline, it may still have run to its end.
      await observer.written(tables);
      // Given up on while the server still runs it: told again once it has stopped.
      const settling = this.#settling;
      if (settling !== undefined) void settling.then(() => observer.written(tables));
    }
  }

  async #execute<R>(compiledQuery: CompiledQuery, options: CallOptions | undefined): Promise<QueryResult<R>> {
    const statement = statementSignal(this.#deadline(), options?.signal);
    try {
      // A statement after one given up on (a ROLLBACK TO SAVEPOINT) runs once the server let go.
      await this.#ready(statement.signal);
      const running = this.lease.resource.run<R>(compiledQuery.sql, compiledQuery.parameters, { signal: statement.signal });
      if (statement.signal === undefined) return toQueryResult(await running);
      const outcome = await this.#untilAborted(running, statement.signal);
      if (outcome.aborted) {
        // Kysely 0.29 has already answered its caller for an abort of its own signal, and
        // reports a late rejection as a failure in the background: end quietly.
        if (options?.signal?.aborted === true && outcome.reason === options.signal.reason) return EMPTY_RESULT;
        throw outcome.reason;
      }
      return toQueryResult(outcome.result);
    } finally {
      statement.dispose();
    }
  }

  /**
   * Settles with `running`, or as soon as `signal` aborts (then `running` becomes what the
   * connection must settle before it is used again).
   */
  #untilAborted<T>(
    running: Promise<T>,
    signal: CancelSignal,
  ): Promise<{ readonly aborted: false; readonly result: T } | { readonly aborted: true; readonly reason: unknown }> {
    if (signal.aborted) {
      // A listener added now would never be called.
      this.#settleAfter(running);
      return Promise.resolve({ aborted: true, reason: signal.reason });
    }
    return new Promise((resolve, reject) => {
      const onAbort = (): void => {
        // The driver is cancelling the statement on the server; the connection is not
        // free until it has (see releaseConnection).
        this.#settleAfter(running);
        resolve({ aborted: true, reason: signal.reason });
      };
      signal.addEventListener('abort', onAbort, { once: true });
      running.then(
        (result) => {
          signal.removeEventListener('abort', onAbort);
          resolve({ aborted: false, result });
        },
        (error: unknown) => {
          signal.removeEventListener('abort', onAbort);
          reject(error);
        },
      );
    });
  }

  /**
   * Kysely 0.29's `inflightQueryAbortStrategy: 'cancel query'` asks for this. sluice has
   * cancelled the statement on the server already, when its signal aborted.
   */
  async cancelQuery(): Promise<void> {}

  streamQuery<R>(compiledQuery: CompiledQuery, chunkSize = 100, options?: CallOptions): AsyncIterableIterator<QueryResult<R>> {
    const observer = this.#observers.current;
    if (observer === undefined) return this.#stream(compiledQuery, chunkSize, options);
    return this.#streamObserved(observer, compiledQuery, chunkSize, options);
  }

  /** A stream while a query cache listens: a streamed write (`insertInto(...).returning(...).stream()`) is told as executeQuery's are. */
  async *#streamObserved<R>(
    observer: WriteObserver,
    compiledQuery: CompiledQuery,
    chunkSize: number,
    options: CallOptions | undefined,
  ): AsyncIterableIterator<QueryResult<R>> {
    const tables = writtenTables(compiledQuery.query);
    const transaction = this.transaction;
    if (tables === undefined) {
      if (transaction !== undefined) observer.readInTransaction();
      return yield* this.#stream<R>(compiledQuery, chunkSize, options);
    }
    if (transaction !== undefined) {
      pendingIn(transaction, observer, tables);
      return yield* this.#stream<R>(compiledQuery, chunkSize, options);
    }
    if (this.pinnedWrites !== undefined) for (const table of tables) this.pinnedWrites.add(table);
    try {
      return yield* this.#stream<R>(compiledQuery, chunkSize, options);
    } finally {
      // Ended, failed or left early: the statement may have written.
      await observer.written(tables);
      const settling = this.#settling;
      if (settling !== undefined) void settling.then(() => observer.written(tables));
    }
  }

  async *#stream<R>(compiledQuery: CompiledQuery, chunkSize: number, options: CallOptions | undefined): AsyncIterableIterator<QueryResult<R>> {
    const connection = this.lease.resource;
    if (connection.stream === undefined) {
      throw new SluiceError('STREAM_UNSUPPORTED', 'This database driver cannot stream yet: use execute().');
    }
    // One deadline for the whole stream, however many round trips it takes.
    const statement = statementSignal(this.#deadline(), options?.signal);
    let chunks: AsyncIterableIterator<R[]> | undefined;
    let finished = false;
    try {
      await this.#ready(statement.signal);
      chunks = connection.stream<R>(compiledQuery.sql, compiledQuery.parameters, { chunkSize, signal: statement.signal });
      for (;;) {
        let next: IteratorResult<R[]>;
        if (statement.signal === undefined) next = await chunks.next();
        else {
          const outcome = await this.#untilAborted(chunks.next(), statement.signal);
          if (outcome.aborted) {
            // The driver's stream ends itself once the server let go.
            finished = true;
            throw outcome.reason;
          }
          next = outcome.result;
        }
        if (next.done === true) {
          finished = true;
          return;
        }
        yield { rows: next.value };
      }
    } catch (error) {
      finished = true;
      throw error;
    } finally {
      statement.dispose();
      // Stopped early (break): the driver closes its cursor, or kills the statement, in
      // the background; the connection is used again, or goes back, once it has.
      if (!finished && chunks?.return !== undefined) this.#settleAfter(chunks.return());
    }
  }
}

function noop(): void {}

function toQueryResult<R>(result: StatementResult<R>): QueryResult<R> {
  if (result.affectedRows === undefined && result.insertId === undefined) return { rows: result.rows };
  return {
    rows: result.rows,
    ...(result.affectedRows !== undefined ? { numAffectedRows: result.affectedRows } : {}),
    ...(result.insertId !== undefined ? { insertId: result.insertId } : {}),
  };
}

/**
 * A write in a transaction: told before the statement runs, so that from now on reads of its
 * tables skip the cache until the transaction ends; the commit tells the cache they changed.
 */
function pendingIn(transaction: TransactionWrites, observer: WriteObserver, tables: readonly string[]): void {
  const fresh = tables.filter((table) => !transaction.tables.has(table));
  if (fresh.length === 0) return;
  for (const table of fresh) transaction.tables.add(table);
  transaction.observer ??= observer;
  transaction.observer.pending(fresh, 1);
}
