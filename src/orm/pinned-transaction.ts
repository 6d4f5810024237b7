/**
 * A transaction held open around a whole test (see `sluice/testing`): while it is open,
 * every query the database runs, from any caller, runs inside it on one connection, and at
 * the end it is rolled back, so the test leaves nothing behind.
 *
 * Inside it the database behaves as a pool of one connection:
 * - A transaction the code under test opens is a savepoint (commit releases it, rollback
 *   undoes it). Its isolation level and access mode cannot be set inside a transaction and
 *   are ignored.
 * - A caller that asks for the connection while another holds it (an open transaction, a
 *   `withConnection` scope) waits, up to its deadline or the pool's acquire timeout, as
 *   it would for a pool of one; a query made inside a sluice transaction or scope of this
 *   database shares the connection instead of waiting for itself.
 * - PostgreSQL aborts a whole transaction at the first failed statement: each statement
 *   outside a transaction of the code gets a savepoint of its own, so a test that expects
 *   an error (a unique violation, a deadline) can go on querying.
 */
import { CompiledQuery, type DatabaseConnection, type QueryResult } from 'kysely';
import type { Driver } from '../drivers/driver.js';
import { ConnectionLostError, DatabaseError, TransactionRolledBackError } from '../drivers/errors.js';
import { SluiceError } from '../errors.js';
import { PoolTimeoutError } from '../pool/index.js';
import { currentDeadline, withoutDeadline } from './deadline-scope.js';
import { type CallOptions, giveBack, type PooledConnection } from './pooled-connection.js';

export interface PinOptions {
  readonly dialect: Driver['dialect'];
  /** True when the caller runs inside a sluice transaction or `withConnection` scope of this database. */
  readonly insideScope: () => boolean;
  /** How long a caller waits for the connection when no deadline is in force (the pool's acquire timeout). */
  readonly waitTimeoutMs: number;
  /** Called once the pin has ended, to route queries to the pool again. */
  readonly onEnd: () => void;
}

/** What became of a pinned transaction at its end. */
export interface PinOutcome {
  /**
   * True when nothing of it was committed: rolled back at the end, or by the server when
   * its connection was lost. False when MySQL committed it (DDL commits implicitly) or the
   * ROLLBACK failed on a live connection.
   */
  readonly rolledBack: boolean;
  /** Why it was not, or how it was (the connection lost). */
  readonly reason?: string;
}

/** A statement failed because the transaction was aborted (PostgreSQL: SQLSTATE 25P02). */
function isInFailedTransaction(error: unknown): boolean {
  return error instanceof DatabaseError && error.sqlState === '25P02';
}

const raw = (text: string): CompiledQuery => CompiledQuery.raw(text);
const noop = (): void => {};

export class TransactionPin {
  readonly #pooled: PooledConnection;
  readonly #options: PinOptions;
  /** The handle holding the connection (a transaction or scope of the code under test), if any. */
  #holder: PinnedConnection | undefined;
  readonly #waiters: Array<(handle: PinnedConnection | Error) => void> = [];
  /**
   * Work that must finish before the next statement: an undo to a savepoint scheduled
   * after a failure (the caller that failed does not wait for it), or the savepoint
   * sequence of a statement in progress (one at a time, or their savepoints would nest).
   */
  #barrier: Promise<void> = Promise.resolve();
  #savepoints = 0;
  /** Set when the transaction can no longer be trusted to be open: the connection broke, an undo failed. */
  #lost: unknown;
  #ended: Promise<PinOutcome> | undefined;

  private constructor(pooled: PooledConnection, options: PinOptions) {
    this.#pooled = pooled;
    this.#options = options;
  }

  /** Begins the transaction on `pooled`, a connection taken from the pool for it. */
  static async begin(pooled: PooledConnection, options: PinOptions): Promise<TransactionPin> {
    const begin = options.dialect === 'mysql' ? 'START TRANSACTION' : options.dialect === 'sqlite' ? 'BEGIN IMMEDIATE' : 'BEGIN';
    try {
      await withoutDeadline(() => pooled.executeQuery(raw(begin)));
    } catch (error) {
      await giveBack(pooled.lease);
      throw error;
    }
    return new TransactionPin(pooled, options);
  }

  /** A handle for one Kysely connection request: the connection itself once free, or shared with the caller's own scope. */
  acquire(callSignal: AbortSignal | undefined): Promise<PinnedConnection> {
    this.#checkUsable();
    if (this.#holder === undefined) return Promise.resolve((this.#holder = new PinnedConnection(this, false)));
    if (this.#options.insideScope()) return Promise.resolve(new PinnedConnection(this, true));
    return this.#wait(callSignal);
  }

  #wait(callSignal: AbortSignal | undefined): Promise<PinnedConnection> {
    const deadline = currentDeadline();
    const startedAt = performance.now();
    const waitMs = deadline === undefined ? this.#options.waitTimeoutMs : Math.max(0, deadline.at - startedAt);
    const signals = [deadline?.signal, callSignal].filter((signal): signal is AbortSignal => signal !== undefined);
    return new Promise<PinnedConnection>((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const settle = (outcome: PinnedConnection | Error): void => {
        clearTimeout(timer);
        for (const signal of signals) signal.removeEventListener('abort', onAbort);
        const index = this.#waiters.indexOf(settle);
        if (index >= 0) this.#waiters.splice(index, 1);
        if (outcome instanceof Error) reject(outcome);
        else resolve(outcome);
      };
      const onAbort = (): void => {
        const aborted = signals.find((signal) => signal.aborted);
        settle(aborted?.reason instanceof Error ? aborted.reason : new SluiceError('ABORTED', 'The wait for the connection was aborted.'));
      };
      for (const signal of signals) {
        if (signal.aborted) return onAbort();
        signal.addEventListener('abort', onAbort, { once: true });
      }
      if (waitMs !== Infinity) {
        timer = setTimeout(
          () =>
            settle(
              new PoolTimeoutError(
                'exhausted',
                performance.now() - startedAt,
                `Waited ${Math.round(performance.now() - startedAt)} ms for the connection of the test's transaction: while a ` +
                  'test runs in a transaction, the database has one connection, and a transaction or withConnection scope ' +
                  "held it. A query that waits for its own transaction's connection never gets it: run it on the transaction " +
                  "(trx, or currentKysely(db)), or turn the test's transaction off for this test.",
              ),
            ),
          Math.ceil(waitMs),
        );
      }
      this.#waiters.push(settle);
    });
  }

  /** Called when Kysely releases a handle: the next waiter gets the connection. */
  release(handle: PinnedConnection): void {
    if (handle.shared || this.#holder !== handle) return;
    this.#holder = undefined;
    const next = this.#waiters.shift();
    if (next !== undefined) next((this.#holder = new PinnedConnection(this, false)));
  }

  /** Runs one statement of `handle`'s. */
  async execute<R>(handle: PinnedConnection, query: CompiledQuery, options?: CallOptions): Promise<QueryResult<R>> {
    this.#checkUsable();
    const inTransaction = handle.savepoint !== undefined || (handle.shared && this.#holder?.savepoint !== undefined);
    if (this.#options.dialect !== 'postgres' || inTransaction) {
      await this.#barrier;
      return this.#pooled.executeQuery<R>(query, options);
    }
    return this.#autosaved(() => this.#pooled.executeQuery<R>(query, options));
  }

  streamQuery<R>(query: CompiledQuery, chunkSize: number | undefined, options?: CallOptions): AsyncIterableIterator<QueryResult<R>> {
    this.#checkUsable();
    return this.#pooled.streamQuery<R>(query, chunkSize, options);
  }

  /** Runs `work` under a savepoint of its own: a failure undoes only it, and the test's transaction goes on. */
  async #autosaved<T>(work: () => Promise<T>): Promise<T> {
    const turn = this.#barrier;
    let done!: () => void;
    this.#barrier = new Promise<void>((resolve) => (done = resolve));
    let scheduled = false;
    try {
      await turn;
      this.#checkUsable();
      await this.#pooled.executeQuery(raw('SAVEPOINT sluice_test_statement'));
      let result: T;
      try {
        result = await work();
      } catch (error) {
        // Once the connection has settled (a cancelled statement): the caller does not wait.
        scheduled = true;
        void this.#undo('sluice_test_statement').finally(done);
        throw error;
      }
      await withoutDeadline(() => this.#pooled.executeQuery(raw('RELEASE SAVEPOINT sluice_test_statement')));
      return result;
    } finally {
      if (!scheduled) done();
    }
  }

  /** Rolls back to `name` and releases it; a failure means the transaction is lost. Never rejects. */
  async #undo(name: string): Promise<void> {
    try {
      await withoutDeadline(async () => {
        await this.#pooled.executeQuery(raw(`ROLLBACK TO SAVEPOINT ${name}`));
        await this.#pooled.executeQuery(raw(`RELEASE SAVEPOINT ${name}`));
      });
    } catch (error) {
      this.#lost ??= error;
    }
  }

  /** A transaction of the code under test begins: a savepoint. */
  async begin(handle: PinnedConnection): Promise<void> {
    this.#checkUsable();
    await this.#barrier;
    const name = `sluice_test_tx_${++this.#savepoints}`;
    await this.#pooled.executeQuery(raw(`SAVEPOINT ${name}`));
    handle.savepoint = name;
  }

  async commit(handle: PinnedConnection): Promise<void> {
    const name = handle.savepoint;
    if (name === undefined) return;
    try {
      await this.#pooled.executeQuery(raw(`RELEASE SAVEPOINT ${name}`));
      handle.savepoint = undefined;
    } catch (error) {
      // PostgreSQL refuses to release a savepoint whose work failed: as a COMMIT would have
      // been, it is rolled back (Kysely calls rollback next).
      if (isInFailedTransaction(error)) {
        throw new TransactionRolledBackError('The transaction was rolled back: a statement in it had failed.', {
          sqlState: '25P02',
          cause: error,
        });
      }
      throw error;
    }
  }

  /** Undoes the code's transaction, after its connection has settled; the caller does not wait for the server. */
  async rollback(handle: PinnedConnection): Promise<void> {
    const name = handle.savepoint;
    if (name === undefined) return;
    handle.savepoint = undefined;
    if (this.#pooled.lease.resource.broken) return;
    const turn = this.#barrier;
    const undo = turn.then(() => this.#undo(name));
    this.#barrier = undo;
    if (this.#pooled.settling === undefined) await undo;
  }

  /**
   * Ends the pin: rolls the transaction back and gives the connection back to the pool.
   * Callers still waiting for the connection fail; a query made afterwards through the
   * database runs on the pool again.
   */
  end(): Promise<PinOutcome> {
    this.#ended ??= this.#end();
    return this.#ended;
  }

  async #end(): Promise<PinOutcome> {
    this.#options.onEnd();
    const ended = new SluiceError('TEST_TRANSACTION_ENDED', "The test's transaction ended while this caller waited for its connection.");
    for (const waiter of this.#waiters.splice(0)) waiter(ended);
    await this.#barrier;
    const lease = this.#pooled.lease;
    let outcome: PinOutcome;
    if (this.#lost !== undefined || lease.resource.broken) {
      // A server rolls back the open transaction of a connection it lost.
      outcome = { rolledBack: true, reason: 'its connection was lost during the test: the server rolled it back' };
    } else {
      try {
        outcome = await withoutDeadline(async () => {
          if (this.#pooled.settling !== undefined) await this.#pooled.settling;
          if (this.#options.dialect === 'mysql' && !(await this.#mysqlInTransaction())) {
            return {
              rolledBack: false,
              reason: 'MySQL committed it during the test (a CREATE, ALTER, DROP, TRUNCATE or LOCK TABLES commits implicitly)',
            };
          }
          await this.#pooled.executeQuery(raw('ROLLBACK'));
          return { rolledBack: true };
        });
      } catch (error) {
        outcome = lease.resource.broken
          ? { rolledBack: true, reason: 'its connection was lost at the end of the test: the server rolled it back' }
          : { rolledBack: false, reason: `its ROLLBACK failed (${error instanceof SluiceError ? error.code : 'error'})` };
      }
    }
    // Back to the pool clean (reset() rolls back anything left), or destroyed.
    await (this.#pooled.settling ?? Promise.resolve()).then(() => giveBack(lease), noop);
    return outcome;
  }

  async #mysqlInTransaction(): Promise<boolean> {
    const { rows } = await this.#pooled.executeQuery<{ open: number | string }>(raw('SELECT @@in_transaction AS open'));
    return Number(rows[0]?.open) === 1;
  }

  #checkUsable(): void {
    if (this.#ended !== undefined) {
      throw new SluiceError(
        'TEST_TRANSACTION_ENDED',
        "The test's transaction has ended: this query was made after its test finished (a query not awaited by the test?).",
      );
    }
    if (this.#lost !== undefined || this.#pooled.lease.resource.broken) {
      throw new ConnectionLostError(
        "The connection of the test's transaction was lost: the server rolled back what the test wrote, and the test cannot query again.",
        { cause: this.#lost },
      );
    }
  }
}

/** The connection of a pinned transaction, as one Kysely caller holds it. */
export class PinnedConnection implements DatabaseConnection {
  readonly pin: TransactionPin;
  /** True for a caller that shares the connection with the scope it runs in (it never held it). */
  readonly shared: boolean;
  /** The savepoint standing for the code's transaction open on this handle, if one is. */
  savepoint: string | undefined;

  constructor(pin: TransactionPin, shared: boolean) {
    this.pin = pin;
    this.shared = shared;
  }

  executeQuery<R>(compiledQuery: CompiledQuery, options?: CallOptions): Promise<QueryResult<R>> {
    return this.pin.execute<R>(this, compiledQuery, options);
  }

  streamQuery<R>(compiledQuery: CompiledQuery, chunkSize?: number, options?: CallOptions): AsyncIterableIterator<QueryResult<R>> {
    return this.pin.streamQuery<R>(compiledQuery, chunkSize, options);
  }

  /** See PooledConnection.cancelQuery: sluice cancels on the server when the signal aborts. */
  async cancelQuery(): Promise<void> {}
}
