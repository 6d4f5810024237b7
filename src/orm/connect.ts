import { Kysely, type IsolationLevel, type Transaction, sql } from 'kysely';
import { InvalidOptionError } from '../errors.js';
import type { Driver, DriverConnection } from '../drivers/driver.js';
import { createPool, type Pool, type PoolOptions, type PoolStats } from '../pool/index.js';
import { checkMilliseconds } from '../pool/options.js';
import { type DeadlineOptions, withDeadline, withoutDeadline } from './deadline-scope.js';
import { SluiceDialect } from './sluice-dialect.js';
import { AsyncLocalStorage } from 'node:async_hooks';

/** Pool settings `connect` passes on; the connection lifecycle hooks are sluice's own. */
export type ConnectPoolOptions = Partial<
  Omit<PoolOptions<DriverConnection>, 'create' | 'destroy' | 'validate' | 'isFatalError' | 'isPermanentCreateError'>
>;

export interface ConnectOptions {
  /** Pool settings. `max` defaults to 10. */
  readonly pool?: ConnectPoolOptions;
  /** The deadline of a statement run outside any `withDeadline` scope, in ms. Default: none. */
  readonly statementTimeoutMs?: number;
  /** TLS settings handed to the driver as they are (`pg`'s and `mysql2`'s `ssl` option). */
  readonly tls?: unknown;
  /**
   * After a deadline or abort, how long to wait for the server to let go of the cancelled
   * statement before closing the connection instead. Default 2 s.
   */
  readonly cancelGraceMs?: number;
}

export interface TransactionOptions extends DeadlineOptions {
  readonly isolation?: IsolationLevel;
}

/** A database: Kysely on a sluice pool, with deadlines, transactions and stats. */
export interface Database<DB> {
  /** Plain Kysely: `database.db.selectFrom('person')...`, and `sql\`...\`.execute(database.db)`. */
  readonly db: Kysely<DB>;
  /** The connection pool underneath. */
  readonly pool: Pool<DriverConnection>;
  /** Runs `work` with one deadline for every query it makes (see `withDeadline`). */
  withDeadline<T>(options: DeadlineOptions, work: () => T): T;
  /**
   * Runs `work` in a transaction pinned to one connection. An error, a deadline or an abort
   * rolls it back. Called inside another transaction, it uses a savepoint.
   */
  transaction<T>(work: (trx: Transaction<DB>) => Promise<T>, options?: TransactionOptions): Promise<T>;
  stats(): PoolStats;
  /** Closes the pool and the driver: no socket or timer is left. */
  close(): Promise<void>;
}

/** The transaction in progress in this async context, for nesting with savepoints. */
interface OpenTransaction {
  /** A `Transaction<DB>` of the database that opened it. */
  readonly trx: unknown;
  readonly depth: number;
}
const openTransaction = new AsyncLocalStorage<OpenTransaction>();

async function loadDriver(url: URL, options: ConnectOptions): Promise<Driver> {
  const shared = {
    ...(options.tls !== undefined ? { ssl: options.tls as never } : {}),
    ...(options.cancelGraceMs !== undefined ? { cancelGraceMs: options.cancelGraceMs } : {}),
  };
  if (url.protocol === 'postgres:' || url.protocol === 'postgresql:') {
    const { PostgresDriver } = await import('../drivers/postgres/postgres-driver.js');
    return new PostgresDriver({ connectionString: url.toString(), ...shared });
  }
  const { MysqlDriver } = await import('../drivers/mysql/mysql-driver.js');
  return new MysqlDriver({ uri: url.toString(), ...shared });
}

/** A driver loaded on first connect, so that `pg` or `mysql2` is only required when used. */
function lazyDriver(dialect: Driver['dialect'], load: () => Promise<Driver>): Driver {
  let loaded: Promise<Driver> | undefined;
  let driver: Driver | undefined;
  return {
    dialect,
    async connect(options) {
      loaded ??= load().then((d) => (driver = d));
      return (await loaded).connect(options);
    },
    isFatal: (error) => driver?.isFatal(error) ?? false,
    close: async () => {
      await driver?.close();
    },
  };
}

/**
 * Connects to PostgreSQL (`postgres://`, `postgresql://`) or MySQL/MariaDB (`mysql://`).
 * Connections open lazily, on the first query.
 */
export function connect<DB>(url: string, options: ConnectOptions = {}): Database<DB> {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    // Never echo the text: it may hold a password.
    throw new InvalidOptionError('url', 'not a valid URL (expected e.g. postgres://user@host:5432/database).');
  }
  const dialect = parsed.protocol === 'mysql:' ? 'mysql' : 'postgres';
  if (!['postgres:', 'postgresql:', 'mysql:'].includes(parsed.protocol)) {
    throw new InvalidOptionError('url', `unsupported protocol ${parsed.protocol}: expected postgres://, postgresql:// or mysql://.`);
  }
  const statementTimeoutMs = checkMilliseconds('statementTimeoutMs', options.statementTimeoutMs, Infinity, {
    allowInfinity: true,
  });
  checkMilliseconds('cancelGraceMs', options.cancelGraceMs, 0, { least: 1 });
  const driver = lazyDriver(dialect, () => loadDriver(parsed, options));
  const pool: Pool<DriverConnection> = createPool<DriverConnection>({
    max: 10,
    ...options.pool,
    create: async ({ signal }) => {
      const connection = await driver.connect({ signal });
      connection.onBroken((error) => pool.evict(connection, error));
      return connection;
    },
    destroy: (connection) => connection.close(),
    validate: async (connection, { signal }) => {
      await connection.ping({ signal });
      return true;
    },
    isFatalError: (error) => driver.isFatal(error),
  });
  const db = new Kysely<DB>({ dialect: new SluiceDialect(pool, driver, statementTimeoutMs) });

  const transaction = async <T>(work: (trx: Transaction<DB>) => Promise<T>, txOptions: TransactionOptions = {}): Promise<T> => {
    const open = openTransaction.getStore();
    return withDeadline(txOptions, async () => {
      if (open !== undefined) return savepoint(open, work);
      let builder = db.transaction();
      if (txOptions.isolation !== undefined) builder = builder.setIsolationLevel(txOptions.isolation);
      return builder.execute((trx) => openTransaction.run({ trx, depth: 0 }, () => work(trx)));
    });
  };

  return {
    db,
    pool,
    withDeadline,
    transaction,
    stats: () => pool.stats(),
    close: async () => {
      await db.destroy();
      await pool.close();
      await driver.close();
    },
  };
}

async function savepoint<DB, T>(open: OpenTransaction, work: (trx: Transaction<DB>) => Promise<T>): Promise<T> {
  const trx = open.trx as Transaction<DB>;
  const name = sql.raw(`sluice_savepoint_${open.depth + 1}`);
  await sql`SAVEPOINT ${name}`.execute(trx);
  try {
    const result = await openTransaction.run({ trx, depth: open.depth + 1 }, () => work(trx));
    await sql`RELEASE SAVEPOINT ${name}`.execute(trx);
    return result;
  } catch (error) {
    // Undo only this level, even after its deadline passed; the outer transaction goes on.
    await withoutDeadline(() => sql`ROLLBACK TO SAVEPOINT ${name}`.execute(trx));
    throw error;
  }
}
