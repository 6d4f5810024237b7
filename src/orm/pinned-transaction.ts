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
 *   (and stream) outside a transaction of the code gets a savepoint of its own, so a test
 *   that expects an error (a unique violation, a deadline) can go on querying.
 * - MySQL commits the open transaction at any DDL statement: the end of the pin reports it
 *   (`rolledBack: false`) instead of passing for isolated.
 */
import { CompiledQuery, type DatabaseConnection, type QueryResult } from 'kysely';
import type { Driver } from '../drivers/driver.js';
import { ConnectionLostError, DatabaseError, TransactionRolledBackError } from '../drivers/errors.js';
import { SluiceError } from '../errors.js';
import { PoolTimeoutError } from '../pool/index.js';
import { currentDeadline, statementSignal, withoutDeadline } from './deadline-scope.js';
import { giveBack } from './connection-pool.js';
import { type CallOptions, type PooledConnection } from './pooled-connection.js';

export interface PinOptions {
  readonly dialect: Driver['dialect'];
  /** True when the caller runs inside a sluice transaction or `withConnection` scope of this database. */
  readonly insideScope: () => boolean;
  /** How long a caller waits for the connection when no deadline is in force (the pool's acquire timeout). */
  readonly waitTimeoutMs: number;
  /**
   * Called when the pin ends, to route queries to the pool again (at once), and to tell
   * query caches of the tables the test wrote (end() settles once that is done). Never rejects.
   */
  readonly onEnd: () => void | Promise<void>;
}

/** What became of a pinned transaction at its end. */
export interface PinOutcome {
  /**
   * True when nothing of it was committed: rolled back at the end, or by the server when
   * its connection was lost or closed. False when MySQL committed it (DDL commits
   * implicitly) or the ROLLBACK failed on a live connection.
   */
  readonly rolledBack: boolean;
  /** Why it was not, or how it was (the connection lost). */
  readonly reason?: string;
}

/**
 * How long the end waits for statements still running (a test that did not await one, a
 * stream left open) before closing the connection instead: the server then rolls the
 * transaction back. Well inside vitest's 10 s hook timeout.
 */
const END_GRACE_MS = 5_000;

/** A statement failed because the transaction was aborted (PostgreSQL: SQLSTATE 25P02). */
function isInFailedTransaction(error: unknown): boolean {
  return error instanceof DatabaseError && error.sqlState === '25P02';
}

/** MySQL's "SAVEPOINT ... does not exist": a DDL statement committed the transaction, savepoints and all. */
function isMissingSavepoint(error: unknown): boolean {
  return error instanceof DatabaseError && error.errno === 1305;
}

const raw = (text: string): CompiledQuery => CompiledQuery.raw(text);
const noop = (): void => {};
const STATEMENT_SAVEPOINT = 'sluice_test_statement';
const BEGIN_SAVEPOINT = 'sluice_test_begin';

export class TransactionPin {
  readonly #pooled: PooledConnection;
  readonly #options: PinOptions;
  /** The handle holding the connection (a transaction or scope of the code under test), if any. */
  #holder: PinnedConnection | undefined;
  readonly #waiters: Array<(handle: PinnedConnection | Error) => void> = [];
  /**
   * Work that must finish before the next statement: the savepoint sequence of a statement
   * or stream in progress (one at a time, or their savepoints would nest), or an undo to a
   * savepoint scheduled after a failure (the caller that failed does not wait for it).
   */
  #barrier: Promise<void> = Promise.resolve();
  #savepoints = 0;
  /** Set when an undo failed on a live connection: the test cannot go on (its end still rolls back). */
  #failed: unknown;
  /** MySQL committed the transaction (a DDL statement): what the test writes from then on is committed too. */
  #committedByServer = false;
  #ended: Promise<PinOutcome> | undefined;

  private constructor(pooled: PooledConnection, options: PinOptions) {
    this.#pooled = pooled;
    this.#options = options;
  }

  /** Begins the transaction on `pooled`, a connection taken from the pool for it. */
  static async begin(pooled: PooledConnection, options: PinOptions): Promise<TransactionPin> {
    const begin = options.dialect === 'mysql' ? 'START TRANSACTION' : options.dialect === 'sqlite' ? 'BEGIN IMMEDIATE' : 'BEGIN';
    try {
      await withoutDeadline(async () => {
        await pooled.executeQuery(raw(begin));
        // MySQL: a marker that a commit (implicit, at DDL) would discard; see #end. MySQL 8
        // has no @@in_transaction (MariaDB only), and a savepoint tells on both.
        if (options.dialect === 'mysql') await pooled.executeQuery(raw(`SAVEPOINT ${BEGIN_SAVEPOINT}`));
      });
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
    // A scope with only a signal has no deadline of its own: the acquire timeout bounds the wait, as in the pool.
    const waitMs = deadline === undefined || deadline.at === Infinity ? this.#options.waitTimeoutMs : Math.max(0, deadline.at - startedAt);
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

  /** Whether `handle`'s statements run inside a transaction of the code (a savepoint), which undoes them on failure. */
  #inCodeTransaction(handle: PinnedConnection): boolean {
    return handle.savepoint !== undefined || (handle.shared && this.#holder?.savepoint !== undefined);
  }

  /** Runs one statement of `handle`'s. */
  async execute<R>(handle: PinnedConnection, query: CompiledQuery, options?: CallOptions): Promise<QueryResult<R>> {
    this.#checkUsable();
    if (this.#options.dialect !== 'postgres' || this.#inCodeTransaction(handle)) {
      await this.#turn(this.#barrier, options);
      return this.#pooled.executeQuery<R>(query, options);
    }
    return this.#autosaved(options, () => this.#pooled.executeQuery<R>(query, options));
  }

  /** Waits for `turn`, or rejects when the caller's deadline or signal comes first (a statement's wait is part of its time). */
  async #turn(turn: Promise<void>, options: CallOptions | undefined): Promise<void> {
    const statement = statementSignal(currentDeadline(), options?.signal);
    const signal = statement.signal;
    if (signal === undefined) return turn;
    let onAbort: (() => void) | undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        if (signal.aborted) return reject(signal.reason);
        onAbort = () => reject(signal.reason);
        signal.addEventListener('abort', onAbort, { once: true });
        void turn.then(resolve);
      });
    } finally {
      if (onAbort !== undefined) signal.removeEventListener('abort', onAbort);
      statement.dispose();
    }
  }

  /** Takes the barrier: returns when it is this caller's turn, with the function that hands it on. */
  async #exclusive(options: CallOptions | undefined): Promise<() => void> {
    const turn = this.#barrier;
    let done!: () => void;
    this.#barrier = new Promise<void>((resolve) => (done = resolve));
    try {
      await this.#turn(turn, options);
      this.#checkUsable();
    } catch (error) {
      // Those after this caller still wait for those before it.
      void turn.then(done);
      throw error;
    }
    return done;
  }

  /** Runs `work` under a savepoint of its own: a failure undoes only it, and the test's transaction goes on. */
  async #autosaved<T>(options: CallOptions | undefined, work: () => Promise<T>): Promise<T> {
    const done = await this.#exclusive(options);
    try {
      await this.#pooled.executeQuery(raw(`SAVEPOINT ${STATEMENT_SAVEPOINT}`));
    } catch (error) {
      done();
      throw error;
    }
    let result: T;
    try {
      result = await work();
    } catch (error) {
      // Undone once the connection has settled (a cancelled statement): the caller does not wait.
      void this.#undo(STATEMENT_SAVEPOINT).finally(done);
      throw error;
    }
    // An abort answered without waiting for the server (Kysely 0.29's own signal) left the statement settling.
    if (this.#pooled.settling !== undefined) {
      void this.#undo(STATEMENT_SAVEPOINT).finally(done);
      return result;
    }
    try {
      await withoutDeadline(() => this.#pooled.executeQuery(raw(`RELEASE SAVEPOINT ${STATEMENT_SAVEPOINT}`)));
    } catch {
      await this.#undo(STATEMENT_SAVEPOINT);
    } finally {
      done();
    }
    return result;
  }

  /** A stream of `handle`'s; on PostgreSQL outside the code's transactions, under a savepoint of its own (held while it is read). */
  async *streamQuery<R>(handle: PinnedConnection, query: CompiledQuery, chunkSize: number | undefined, options?: CallOptions): AsyncIterableIterator<QueryResult<R>> {
    this.#checkUsable();
    if (this.#options.dialect !== 'postgres' || this.#inCodeTransaction(handle)) {
      await this.#turn(this.#barrier, options);
      yield* this.#pooled.streamQuery<R>(query, chunkSize, options);
      return;
    }
    const done = await this.#exclusive(options);
    let finished = false;
    try {
      await this.#pooled.executeQuery(raw(`SAVEPOINT ${STATEMENT_SAVEPOINT}`));
      yield* this.#pooled.streamQuery<R>(query, chunkSize, options);
      finished = true;
    } finally {
      // Read to its end: released; failed, or stopped early (its cursor closing): undone. Neither
      // keeps the caller waiting; the next statement waits for it.
      const end = finished && this.#pooled.settling === undefined ? this.#release(STATEMENT_SAVEPOINT) : this.#undo(STATEMENT_SAVEPOINT);
      void end.finally(done);
    }
  }

  /** Releases `name`; failing that, undoes it. Never rejects. */
  async #release(name: string): Promise<void> {
    try {
      await withoutDeadline(() => this.#pooled.executeQuery(raw(`RELEASE SAVEPOINT ${name}`)));
    } catch {
      await this.#undo(name);
    }
  }

  /** Rolls back to `name` and releases it, once the connection has settled. Never rejects. */
  async #undo(name: string): Promise<void> {
    try {
      await withoutDeadline(async () => {
        await this.#pooled.executeQuery(raw(`ROLLBACK TO SAVEPOINT ${name}`));
        await this.#pooled.executeQuery(raw(`RELEASE SAVEPOINT ${name}`));
      });
    } catch (error) {
      this.#noteSavepointFailure(error);
    }
  }

  /** Why a savepoint could not be released or undone: MySQL committed at DDL, the connection broke, or the transaction is in doubt. */
  #noteSavepointFailure(error: unknown): void {
    if (this.#pooled.lease.resource.broken) return; // #checkUsable says so from now on
    if (this.#options.dialect === 'mysql' && isMissingSavepoint(error)) this.#committedByServer = true;
    else this.#failed ??= error;
  }

  /** A transaction of the code under test begins: a savepoint. */
  async begin(handle: PinnedConnection): Promise<void> {
    this.#checkUsable();
    await this.#turn(this.#barrier, undefined);
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
      if (this.#options.dialect === 'mysql' && isMissingSavepoint(error)) {
        // A DDL statement in the code's transaction committed it, as it would have outside a
        // test: the commit stands, and the end of the test reports the transaction committed.
        this.#committedByServer = true;
        handle.savepoint = undefined;
        return;
      }
      if (isInFailedTransaction(error)) {
        // PostgreSQL refuses to release a savepoint whose work failed: as a COMMIT would have
        // been, it is rolled back, and the connection handed on (Kysely's startTransaction()
        // does not release a connection whose commit failed; here it is the only one).
        handle.savepoint = undefined;
        await this.#undo(name);
        this.release(handle);
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
   * database runs on the pool again. Settles within about `END_GRACE_MS`: past it the
   * connection is closed instead (and the server rolls back).
   */
  end(): Promise<PinOutcome> {
    if (this.#ended === undefined) {
      const told = this.#options.onEnd();
      this.#ended = Promise.all([this.#end(), told]).then(([outcome]) => outcome);
    }
    return this.#ended;
  }

  async #end(): Promise<PinOutcome> {
    const ended = new SluiceError('TEST_TRANSACTION_ENDED', "The test's transaction ended while this caller waited for its connection.");
    for (const waiter of this.#waiters.splice(0)) waiter(ended);
    const lease = this.#pooled.lease;
    const lost: PinOutcome = { rolledBack: true, reason: 'its connection was lost during the test: the server rolled it back' };
    let timer: ReturnType<typeof setTimeout> | undefined;
    const overdue = new Promise<'overdue'>((resolve) => (timer = setTimeout(() => resolve('overdue'), END_GRACE_MS)));
    const rollback = withoutDeadline(async (): Promise<PinOutcome> => {
      await this.#barrier;
      await this.#pooled.settling;
      if (lease.resource.broken) return lost;
      try {
        if (this.#options.dialect === 'mysql' && (this.#committedByServer || !(await this.#mysqlStillOpen()))) {
          await this.#pooled.executeQuery(raw('ROLLBACK'));
          return {
            rolledBack: false,
            reason: 'MySQL committed it during the test (a CREATE, ALTER, DROP, TRUNCATE or LOCK TABLES commits implicitly)',
          };
        }
        await this.#pooled.executeQuery(raw('ROLLBACK'));
        return { rolledBack: true };
      } catch (error) {
        return lease.resource.broken ? lost : { rolledBack: false, reason: `its ROLLBACK failed (${error instanceof SluiceError ? error.code : 'error'})` };
      }
    });
    const outcome = await Promise.race([rollback, overdue]).finally(() => clearTimeout(timer));
    if (outcome === 'overdue') {
      // A statement still running (not awaited by the test), or a stream left open: closing
      // the connection ends it, and the server rolls the transaction back.
      if (!lease.released) lease.destroy();
      void rollback.catch(noop);
      return { rolledBack: true, reason: `statements were still running ${END_GRACE_MS} ms after the test: its connection was closed, and the server rolled it back` };
    }
    // Back to the pool clean (reset() rolls back anything left), or destroyed.
    await giveBack(lease);
    return outcome;
  }

  /** Whether MySQL's transaction is the one begun: its first savepoint is still there (a commit discards them all). */
  async #mysqlStillOpen(): Promise<boolean> {
    try {
      await this.#pooled.executeQuery(raw(`ROLLBACK TO SAVEPOINT ${BEGIN_SAVEPOINT}`));
      return true;
    } catch (error) {
      if (isMissingSavepoint(error)) return false;
      throw error;
    }
  }

  #checkUsable(): void {
    if (this.#ended !== undefined) {
      throw new SluiceError(
        'TEST_TRANSACTION_ENDED',
        "The test's transaction has ended: this query was made after its test finished (a query not awaited by the test?).",
      );
    }
    if (this.#pooled.lease.resource.broken) {
      throw new ConnectionLostError(
        "The connection of the test's transaction was lost: the server rolled back what the test wrote, and the test cannot query again.",
        { cause: undefined },
      );
    }
    if (this.#failed !== undefined) {
      throw new SluiceError(
        'TEST_TRANSACTION_FAILED',
        "The test's transaction is in doubt: undoing a failed statement to its savepoint failed. The test cannot query again; its end rolls the transaction back.",
        { cause: this.#failed },
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
    return this.pin.streamQuery<R>(this, compiledQuery, chunkSize, options);
  }

  /** See PooledConnection.cancelQuery: sluice cancels on the server when the signal aborts. */
  async cancelQuery(): Promise<void> {}
}
