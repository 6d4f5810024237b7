import { CompiledQuery, type DatabaseConnection, type Driver as KyselyDriver, type TransactionSettings } from 'kysely';
import type { Driver, DriverConnection } from '../drivers/driver.js';
import { InvalidOptionError, SluiceError } from '../errors.js';
import { type Pool, PoolCreateError } from '../pool/index.js';
import { anySignal, currentDeadline, withoutDeadline } from './deadline-scope.js';
import { PinnedConnection, type PinOptions, TransactionPin } from './pinned-transaction.js';
import { giveBack } from './connection-pool.js';
import { type CallOptions, type DeadlineSource, PooledConnection } from './pooled-connection.js';
import { WriteObservers } from './write-observers.js';

/**
 * SQLite transactions are serializable, and nothing else: another isolation level is refused
 * rather than silently not given; so is `read only`, which SQLite cannot enforce per
 * transaction.
 */
export function checkSqliteTransaction(settings: TransactionSettings): void {
  const isolation = settings.isolationLevel;
  if (isolation !== undefined && isolation !== 'serializable') {
    throw new InvalidOptionError(
      'isolation',
      `SQLite transactions are always serializable; '${isolation}' is not available (leave it out, or ask for 'serializable').`,
    );
  }
  if (settings.accessMode !== undefined && settings.accessMode !== 'read write') {
    throw new InvalidOptionError('accessMode', `SQLite cannot make one transaction '${settings.accessMode}'.`);
  }
}

/** Kysely's driver over a sluice pool: connections are leases, released (or destroyed) after use. */
export class PoolKyselyDriver implements KyselyDriver {
  readonly #pool: Pool<DriverConnection>;
  readonly #driver: Driver;
  readonly #deadline: DeadlineSource;
  /** A transaction every query runs in while it is set (a test's: see pinned-transaction.ts). */
  #pin: TransactionPin | undefined;
  #pinning = false;
  /** The connection of the open pin: the tables the test wrote (see rollbackTransaction). */
  #pinned: PooledConnection | undefined;
  /** Query caches listening to this database's writes (see observeWrites in connect.ts). */
  readonly observers = new WriteObservers();

  constructor(pool: Pool<DriverConnection>, driver: Driver, statementTimeoutMs: number) {
    this.#pool = pool;
    this.#driver = driver;
    this.#deadline =
      statementTimeoutMs === Infinity
        ? currentDeadline
        : () => currentDeadline() ?? { at: performance.now() + statementTimeoutMs, timeoutMs: statementTimeoutMs, signal: undefined };
  }

  async init(): Promise<void> {}

  /** Opens a transaction on one connection of the pool that every query then runs in, until it ends. */
  async pinTransaction(options: Omit<PinOptions, 'dialect' | 'onEnd'>): Promise<TransactionPin> {
    if (this.#pin !== undefined || this.#pinning) {
      throw new SluiceError(
        'TEST_TRANSACTION_OPEN',
        "A test transaction is already open on this database: tests that share one database and run in transactions run one at a time (not test.concurrent).",
      );
    }
    // Taken before the first await: two calls at once must not both open one.
    this.#pinning = true;
    try {
      const connection = (await this.acquireConnection()) as PooledConnection;
      let pin: TransactionPin | undefined;
      // Every table the test writes is told to query caches as it is written (the test reads
      // its own writes); and again when the pin ends, since the rollback undoes them: cached
      // results holding the test's rows must not be served to the next test.
      connection.pinnedWrites = new Set();
      const onEnd = async (): Promise<void> => {
        if (this.#pin === pin) this.#pin = undefined;
        if (this.#pinned === connection) this.#pinned = undefined;
        const written = connection.pinnedWrites;
        connection.pinnedWrites = undefined;
        if (written !== undefined && written.size > 0) await this.observers.current?.written([...written]);
      };
      pin = await TransactionPin.begin(connection, { ...options, dialect: this.#driver.dialect, onEnd });
      this.#pin = pin;
      this.#pinned = connection;
      return pin;
    } finally {
      this.#pinning = false;
    }
  }

  async acquireConnection(options?: CallOptions): Promise<DatabaseConnection> {
    if (this.#pin !== undefined) return this.#pin.acquire(options?.signal);
    const deadline = currentDeadline();
    const remainingMs = deadline === undefined ? undefined : Math.max(0, deadline.at - performance.now());
    // Kysely 0.29's `execute({ signal })` covers the wait for a connection too.
    const signal = anySignal(deadline?.signal, options?.signal);
    try {
      const lease = await this.#pool.acquire({
        ...(signal !== undefined ? { signal } : {}),
        ...(remainingMs !== undefined && remainingMs !== Infinity ? { timeoutMs: remainingMs } : {}),
      });
      return new PooledConnection(lease, this.#deadline, this.observers);
    } catch (error) {
      // A wrong password or an unknown database reaches the caller as itself
      // (AUTH_FAILED, UNKNOWN_DATABASE), not wrapped in the pool's POOL_CREATE_FAILED.
      if (error instanceof PoolCreateError && error.cause instanceof SluiceError) throw error.cause;
      throw error;
    }
  }

  async beginTransaction(connection: DatabaseConnection, settings: TransactionSettings): Promise<void> {
    if (connection instanceof PinnedConnection) {
      if (this.#driver.dialect === 'sqlite') checkSqliteTransaction(settings);
      return connection.pin.begin(connection);
    }
    // Its writes are told to query caches when it ends (see PooledConnection.transaction).
    (connection as PooledConnection).transaction = { tables: new Set(), observer: undefined };
    const isolation = settings.isolationLevel;
    const access = settings.accessMode;
    if (this.#driver.dialect === 'mysql') {
      const characteristics = [isolation && `ISOLATION LEVEL ${isolation.toUpperCase()}`, access && access.toUpperCase()]
        .filter(Boolean)
        .join(', ');
      if (characteristics !== '') await this.#run(connection, `SET TRANSACTION ${characteristics}`);
      await this.#run(connection, 'START TRANSACTION');
      return;
    }
    if (this.#driver.dialect === 'sqlite') {
      checkSqliteTransaction(settings);
      // IMMEDIATE: the transaction takes the write lock at BEGIN, so it never fails half
      // way with SQLITE_BUSY when it first writes (sluice queues writers for the lock).
      await this.#run(connection, 'BEGIN IMMEDIATE');
      return;
    }
    const modes = [isolation && `ISOLATION LEVEL ${isolation.toUpperCase()}`, access && access.toUpperCase()].filter(Boolean);
    await this.#run(connection, modes.length > 0 ? `BEGIN ${modes.join(' ')}` : 'BEGIN');
  }

  async commitTransaction(connection: DatabaseConnection): Promise<void> {
    if (connection instanceof PinnedConnection) return connection.pin.commit(connection);
    const pooled = connection as PooledConnection;
    try {
      await this.#run(connection, 'COMMIT');
    } finally {
      // A failed COMMIT too: the server may have committed before the connection was lost.
      await this.#ended(pooled, true);
    }
  }

  /**
   * The end of `pooled`'s transaction: query caches hear of its writes (awaited, before the
   * caller of commit hears back), and stop skipping the tables it wrote. A rollback is told
   * as a write on MySQL, where a DDL statement commits the transaction implicitly.
   */
  async #ended(pooled: PooledConnection, committed: boolean): Promise<void> {
    const transaction = pooled.transaction;
    pooled.transaction = undefined;
    if (transaction === undefined || transaction.tables.size === 0) return;
    const tables = [...transaction.tables];
    try {
      if (committed || this.#driver.dialect === 'mysql') await this.observers.current?.written(tables);
    } finally {
      transaction.observer?.pending(tables, -1);
    }
  }

  async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
    if (connection instanceof PinnedConnection) {
      try {
        return await connection.pin.rollback(connection);
      } finally {
        // The code's transaction was a savepoint of the test's: its writes were told at once
        // (the test reads them), and rows read in it may have been stored (a Kysely `trx`
        // builder); undone, they must not be served. Every table the test wrote so far: more
        // than the savepoint's, which only costs the test a few misses.
        const written = this.#pinned?.pinnedWrites;
        if (written !== undefined && written.size > 0) await this.observers.current?.written([...written]);
      }
    }
    const pooled = connection as PooledConnection;
    await this.#ended(pooled, false);
    // The server rolls back a closed connection's transaction; a connection still settling
    // a cancelled statement is rolled back by reset() once it has: before it goes back to
    // the pool, or before its next statement (rollbackPending), so the caller does not wait
    // for the server.
    if (pooled.lease.resource.broken) return;
    if (pooled.settling !== undefined) {
      pooled.rollbackPending = true;
      return;
    }
    // After a deadline or an abort the rollback must still run: outside the deadline.
    await withoutDeadline(() => this.#run(connection, 'ROLLBACK'));
  }

  async releaseConnection(connection: DatabaseConnection): Promise<void> {
    if (connection instanceof PinnedConnection) return connection.pin.release(connection);
    const pooled = connection as PooledConnection;
    if (pooled.givenBack || pooled.lease.released) return;
    pooled.givenBack = true;
    if (pooled.settling !== undefined) {
      // Back to the pool once the server has let go of the cancelled statement; the caller
      // who gave up on it does not wait for that.
      void pooled.settling.then(() => giveBack(pooled.lease));
      return;
    }
    await giveBack(pooled.lease);
  }

  async destroy(): Promise<void> {
    // The pool and the driver belong to whoever made them (connect()): it closes them,
    // even when Kysely never initialised this driver and so never calls this.
  }

  async #run(connection: DatabaseConnection, sql: string): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw(sql));
  }
}
