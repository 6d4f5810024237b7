import {
  CompiledQuery,
  type DatabaseConnection,
  type Driver as KyselyDriver,
  type QueryResult,
  type TransactionSettings,
} from 'kysely';
import type { CancelSignal, Driver, DriverConnection, StatementResult } from '../drivers/driver.js';
import { InvalidOptionError, SluiceError } from '../errors.js';
import { type Lease, type Pool, PoolCreateError } from '../pool/index.js';
import { currentDeadline, type Deadline, statementSignal, withoutDeadline } from './deadline-scope.js';

/** The deadline for a statement: the scope's, else the default statement timeout, else none. */
export type DeadlineSource = () => Deadline | undefined;

/** Options Kysely 0.29 passes to `executeQuery` (0.28 passes none). */
interface ExecuteOptions {
  readonly signal?: AbortSignal;
}

/**
 * One pooled connection as Kysely sees it. Every statement gets the deadline in force
 * (and, on Kysely 0.29, the `execute({ signal })` signal): past it, the statement is
 * cancelled on the server.
 *
 * The caller does not wait for the cancellation: a driver settles only once the server has
 * let go of the statement (bounded by its `cancelGraceMs`), which on a stalled network is
 * the whole grace period. The statement rejects at the deadline; the connection stays
 * checked out, `settling`, until the driver knows its state, and only then goes back to
 * the pool (or is destroyed).
 */
class PooledConnection implements DatabaseConnection {
  readonly lease: Lease<DriverConnection>;
  readonly #deadline: DeadlineSource;
  /** Set while a statement given up on is still being cancelled; settles when it is done. */
  settling: Promise<void> | undefined;

  constructor(lease: Lease<DriverConnection>, deadline: DeadlineSource) {
    this.lease = lease;
    this.#deadline = deadline;
  }

  async executeQuery<R>(compiledQuery: CompiledQuery, options?: ExecuteOptions): Promise<QueryResult<R>> {
    // A statement after one given up on (a ROLLBACK TO SAVEPOINT) runs once the server let go.
    if (this.settling !== undefined) await this.settling;
    const statement = statementSignal(this.#deadline(), options?.signal);
    try {
      const running = this.lease.resource.run<R>(compiledQuery.sql, compiledQuery.parameters, { signal: statement.signal });
      const result = statement.signal === undefined ? await running : await this.#untilAborted(running, statement.signal);
      return toQueryResult(result);
    } finally {
      statement.dispose();
    }
  }

  /** Settles with `running`, or rejects with the signal's reason as soon as it aborts. */
  #untilAborted<T>(running: Promise<T>, signal: CancelSignal): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const onAbort = (): void => {
        // The driver is cancelling the statement on the server; the connection is not
        // free until it has (see releaseConnection).
        this.settling = running.then(
          () => {},
          () => {},
        );
        reject(signal.reason);
      };
      signal.addEventListener('abort', onAbort, { once: true });
      running.then(
        (result) => {
          signal.removeEventListener('abort', onAbort);
          resolve(result);
        },
        (error: unknown) => {
          signal.removeEventListener('abort', onAbort);
          reject(error);
        },
      );
    });
  }

  async *streamQuery<R>(compiledQuery: CompiledQuery, chunkSize = 100): AsyncIterableIterator<QueryResult<R>> {
    const connection = this.lease.resource;
    if (connection.stream === undefined) {
      throw new SluiceError('STREAM_UNSUPPORTED', 'This database driver cannot stream yet: use execute().');
    }
    if (this.settling !== undefined) await this.settling;
    // One deadline for the whole stream, however many round trips it takes.
    const statement = statementSignal(this.#deadline());
    const chunks = connection.stream<R>(compiledQuery.sql, compiledQuery.parameters, { chunkSize, signal: statement.signal });
    let finished = false;
    try {
      for (;;) {
        const next = statement.signal === undefined ? await chunks.next() : await this.#untilAborted(chunks.next(), statement.signal);
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
      // the background; the connection goes back to the pool once it has.
      if (!finished && this.settling === undefined) {
        this.settling = chunks.return?.().then(
          () => {},
          () => {},
        );
      }
    }
  }
}

function toQueryResult<R>(result: StatementResult<R>): QueryResult<R> {
  if (result.affectedRows === undefined && result.insertId === undefined) return { rows: result.rows };
  return {
    rows: result.rows,
    ...(result.affectedRows !== undefined ? { numAffectedRows: result.affectedRows } : {}),
    ...(result.insertId !== undefined ? { insertId: result.insertId } : {}),
  };
}

/** Returns a connection to the pool clean (an open transaction rolled back), or destroys it. Never rejects. */
async function giveBack(lease: Lease<DriverConnection>): Promise<void> {
  if (lease.released) return;
  const resource = lease.resource;
  if (!resource.broken) {
    try {
      // Drivers take deadlines only as signals, never from the scope: nothing to step out of.
      await resource.reset();
    } catch {
      // A connection that cannot be reset cannot be trusted.
    }
  }
  if (resource.broken) lease.destroy();
  else lease.release();
}

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

  constructor(pool: Pool<DriverConnection>, driver: Driver, statementTimeoutMs: number) {
    this.#pool = pool;
    this.#driver = driver;
    this.#deadline =
      statementTimeoutMs === Infinity
        ? currentDeadline
        : () => currentDeadline() ?? { at: performance.now() + statementTimeoutMs, timeoutMs: statementTimeoutMs, signal: undefined };
  }

  async init(): Promise<void> {}

  async acquireConnection(): Promise<DatabaseConnection> {
    const deadline = currentDeadline();
    const remainingMs = deadline === undefined ? undefined : Math.max(0, deadline.at - performance.now());
    try {
      const lease = await this.#pool.acquire({
        ...(deadline?.signal !== undefined ? { signal: deadline.signal } : {}),
        ...(remainingMs !== undefined && remainingMs !== Infinity ? { timeoutMs: remainingMs } : {}),
      });
      return new PooledConnection(lease, this.#deadline);
    } catch (error) {
      // A wrong password or an unknown database reaches the caller as itself
      // (AUTH_FAILED, UNKNOWN_DATABASE), not wrapped in the pool's POOL_CREATE_FAILED.
      if (error instanceof PoolCreateError && error.cause instanceof SluiceError) throw error.cause;
      throw error;
    }
  }

  async beginTransaction(connection: DatabaseConnection, settings: TransactionSettings): Promise<void> {
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
    await this.#run(connection, 'COMMIT');
  }

  async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
    const pooled = connection as PooledConnection;
    // The server rolls back a closed connection's transaction; a connection still settling
    // a cancelled statement is rolled back by reset() before it goes back to the pool.
    if (pooled.lease.resource.broken || pooled.settling !== undefined) return;
    // After a deadline or an abort the rollback must still run: outside the deadline.
    await withoutDeadline(() => this.#run(connection, 'ROLLBACK'));
  }

  async releaseConnection(connection: DatabaseConnection): Promise<void> {
    const pooled = connection as PooledConnection;
    if (pooled.lease.released) return;
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
