import { Kysely, type IsolationLevel, type LogConfig, type Transaction, sql } from 'kysely';
import { InvalidOptionError } from '../errors.js';
import { TransactionRolledBackError } from '../drivers/errors.js';
import type { Driver, DriverConnection } from '../drivers/driver.js';
import type { Pool, PoolSettings, PoolStats } from '../pool/index.js';
import { connectionPool } from './connection-pool.js';
import { checkMilliseconds, DEFAULT_ACQUIRE_TIMEOUT_MS } from '../pool/options.js';
import { type DeadlineOptions, withDeadline, withoutDeadline } from './deadline-scope.js';
import { checkSqliteTransaction, PoolKyselyDriver } from './kysely-driver.js';
import type { TransactionPin } from './pinned-transaction.js';
import { SluiceDialect } from './sluice-dialect.js';
import type { WriteObserver } from './write-observers.js';
import { AsyncLocalStorage } from 'node:async_hooks';
import { createHash, randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { resolve as resolvePath } from 'node:path';

/** Pool settings `connect` passes on; the connection lifecycle hooks are sluice's own. */
export type ConnectPoolOptions = PoolSettings<DriverConnection>;

/** Settings for SQLite (`sqlite:` URLs). */
export interface SqliteConnectOptions {
  /**
   * How long a writer waits for the write lock (held by another transaction of this pool,
   * or by another process) before failing with `BUSY`, which is `retryable`. Default 5 s:
   * rides out ordinary transactions, still reports a lock that is stuck.
   */
  readonly busyTimeoutMs?: number;
  /** Integers read back as `bigint` (exact beyond 2^53) instead of `number`. Default false. */
  readonly bigints?: boolean;
  /**
   * Worker threads running SQLite, shared by all the pool's sessions (statements of many
   * sessions are pipelined to each). Default 4 for a file, 1 (the only value allowed) for
   * `:memory:`.
   */
  readonly workers?: number;
}

export interface ConnectOptions {
  /**
   * Pool settings. `max` defaults to 10. For SQLite it bounds concurrent sessions, which
   * are cheap (no thread of their own): the threads are `sqlite.workers`.
   */
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
  /**
   * Prepared statements kept per connection (SQLite: per worker), least recently used out
   * and closed on the server. 0 turns the cache off (MySQL then sends every statement as
   * text). Default 100.
   */
  readonly statementCacheSize?: number;
  /** SQLite settings (ignored by the other databases). */
  readonly sqlite?: SqliteConnectOptions;
  /**
   * Kysely's query log, as Kysely takes it: `['query', 'error']`, or a function called with
   * each query's SQL, parameters and `queryDurationMillis` (for a latency histogram). Default: none.
   */
  readonly log?: LogConfig;
}

export interface TransactionOptions extends DeadlineOptions {
  readonly isolation?: IsolationLevel;
}

/** A database: Kysely on a sluice pool, with deadlines, transactions and stats. */
export interface Database<DB> {
  /** Which database the URL named: for the few statements that differ between them (DDL). */
  readonly dialect: Driver['dialect'];
  /**
   * Where it is, safe to log: `PostgreSQL db.internal:5432/app`, `MySQL 127.0.0.1:3306/test`,
   * `SQLite /srv/data/app.db`. Never the user, password or query string of the URL.
   */
  readonly location: string;
  /** Plain Kysely: `database.db.selectFrom('person')...`, and `sql\`...\`.execute(database.db)`. */
  readonly db: Kysely<DB>;
  /** The connection pool underneath. */
  readonly pool: Pool<DriverConnection>;
  /** Runs `work` with one deadline for every query it makes (see `withDeadline`). */
  withDeadline<T>(options: DeadlineOptions, work: () => T): T;
  /**
   * Runs `work` in a transaction pinned to one connection. An error, a deadline or an abort
   * rolls it back. Called inside another transaction, it uses a savepoint; inside
   * `withConnection`, it runs on that scope's connection.
   */
  transaction<T>(work: (trx: Transaction<DB>) => Promise<T>, options?: TransactionOptions): Promise<T>;
  /**
   * Runs `work` on one connection, acquired once, without a transaction: the queries it
   * makes through models and repositories, or through `currentKysely(database.db)`, run on
   * that connection, one at a time, and `transaction()` begins on it. For a unit of work
   * that makes several queries in a row (a request that reads a row and its relations) it
   * waits for a connection once instead of once per query, which bounds its latency when
   * the pool is busy. Inside a transaction or another scope of this database, it runs there.
   * The deadline and signal cover the wait for the connection (a `PoolTimeoutError` past it).
   *
   * As in a transaction: a query made on `database.db` itself inside the scope takes a
   * second connection (with every connection held by such scopes, it waits until its
   * deadline); and a query made while a stream of the scope is being read waits for the
   * stream to end.
   */
  withConnection<T>(work: () => Promise<T>, options?: DeadlineOptions): Promise<T>;
  stats(): PoolStats;
  /** Closes the pool and the driver: no socket or timer is left. */
  close(): Promise<void>;
}

/**
 * The transactions (and `withConnection` scopes) in progress in this async context,
 * innermost first, for nesting with savepoints. A chain, not one entry: work inside a
 * transaction of one database may open a transaction of another, and a nested call must
 * find its own database's.
 */
interface OpenTransaction {
  /** The Kysely instance of the database that opened it. */
  readonly db: object;
  /**
   * `transaction`: a `Transaction<DB>` of that database, in which nested calls make
   * savepoints; `connection`: a `withConnection` scope, a `Kysely<DB>` bound to one
   * connection with no transaction open, in which a `transaction()` call begins one.
   */
  readonly kind: 'transaction' | 'connection';
  /** The `Transaction<DB>`, or the connection scope's `Kysely<DB>`. */
  readonly trx: unknown;
  readonly depth: number;
  readonly outer: OpenTransaction | undefined;
  /**
   * Settles when the last nested transaction begun at this level has ended. Nested calls
   * run one after another: two savepoints interleaved on one connection would undo each
   * other's work (ROLLBACK TO the first also discards the second).
   */
  nestedTail: Promise<void>;
  /** Shared by every level of one transaction: why it must not commit, if it must not. */
  readonly root: { failure: unknown };
}
const openTransactions = new AsyncLocalStorage<OpenTransaction>();

/** The innermost open transaction of `db` in this async context. */
function openTransactionOf(db: object): OpenTransaction | undefined {
  for (let open = openTransactions.getStore(); open !== undefined; open = open.outer) {
    if (open.db === db) return open;
  }
  return undefined;
}

/**
 * The Kysely a query made here should run on: the innermost transaction (or
 * `withConnection` scope) of `db` open in this async context, else `db` itself. Lets code that is handed a `Database` rather than the
 * `trx` (models, repositories) join the transaction it is called in.
 */
export function currentKysely<DB>(db: Kysely<DB>): Kysely<DB> {
  return (openTransactionOf(db)?.trx as Transaction<DB> | undefined) ?? db;
}

/** Where `connect` goes: a server URL, or a SQLite file. */
type Target =
  | { readonly dialect: 'postgres' | 'mysql'; readonly url: URL }
  | { readonly dialect: 'sqlite'; readonly path: string };

async function loadDriver(target: Target, options: ConnectOptions): Promise<Driver> {
  if (target.dialect === 'sqlite') {
    const { SqliteDriver } = await import('../drivers/sqlite/sqlite-driver.js');
    return new SqliteDriver({
      path: target.path,
      ...(options.statementCacheSize !== undefined ? { statementCacheSize: options.statementCacheSize } : {}),
      ...options.sqlite,
    });
  }
  const url = target.url;
  const shared = {
    ...(options.tls !== undefined ? { ssl: options.tls as never } : {}),
    ...(options.cancelGraceMs !== undefined ? { cancelGraceMs: options.cancelGraceMs } : {}),
    ...(options.statementCacheSize !== undefined ? { statementCacheSize: options.statementCacheSize } : {}),
  };
  if (url.protocol === 'postgres:' || url.protocol === 'postgresql:') {
    const { PostgresDriver } = await import('../drivers/postgres/postgres-driver.js');
    return new PostgresDriver({ connectionString: url.toString(), ...shared });
  }
  const { MysqlDriver } = await import('../drivers/mysql/mysql-driver.js');
  return new MysqlDriver({ uri: url.toString(), ...shared });
}

/** A driver loaded on first connect, so that `pg`, `mysql2` or `better-sqlite3` is only required when used. */
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

const PROTOCOLS = 'postgres://, postgresql://, mysql:// or sqlite: (sqlite:./app.db, sqlite:/abs/app.db, sqlite::memory:)';

function parseTarget(url: string): Target {
  if (typeof url === 'string' && /^sqlite:/i.test(url)) return { dialect: 'sqlite', path: sqlitePath(url) };
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    // Never echo the text: it may hold a password.
    throw new InvalidOptionError('url', `not a valid URL (expected ${PROTOCOLS}).`);
  }
  if (!['postgres:', 'postgresql:', 'mysql:'].includes(parsed.protocol)) {
    throw new InvalidOptionError('url', `unsupported protocol ${parsed.protocol}: expected ${PROTOCOLS}.`);
  }
  return { dialect: parsed.protocol === 'mysql:' ? 'mysql' : 'postgres', url: parsed };
}

/**
 * The file a `sqlite:` URL names, made absolute against the working directory, or
 * `:memory:`: `sqlite:./app.db`, `sqlite:app.db`, `sqlite:/abs/app.db`, `sqlite::memory:`,
 * and the same with `//` after the colon (`sqlite:///abs/app.db`, `sqlite://./app.db`).
 * The path is taken as written (no percent-decoding).
 */
function sqlitePath(url: string): string {
  let path = url.slice('sqlite:'.length);
  if (path.startsWith('//')) path = path.slice(2);
  if (path === '') {
    throw new InvalidOptionError('url', 'a sqlite: URL needs a file path or :memory: (sqlite:./app.db, sqlite::memory:).');
  }
  if (/[?#]/.test(path)) {
    throw new InvalidOptionError('url', 'a sqlite: URL takes no ?query or #fragment: pass settings in the sqlite option.');
  }
  return path === ':memory:' ? path : resolvePath(path);
}

function locationOf(target: Target): string {
  if (target.dialect === 'sqlite') return `SQLite ${target.path}`;
  const { hostname, port, pathname } = target.url;
  return `${target.dialect === 'mysql' ? 'MySQL' : 'PostgreSQL'} ${hostname}${port === '' ? '' : `:${port}`}${pathname}`;
}

/** SQLite's worker count, refused at once when wrong (the driver itself loads lazily). */
function checkSqliteWorkers(path: string, workers: number | undefined): void {
  if (workers === undefined) return;
  if (!Number.isSafeInteger(workers) || workers < 1 || workers > 64) {
    throw new InvalidOptionError('sqlite.workers', 'must be a whole number from 1 to 64');
  }
  if (path === ':memory:' && workers !== 1) {
    throw new InvalidOptionError(
      'sqlite.workers',
      'a sqlite::memory: database lives in a single worker (a second one would see its own empty database): leave workers out, or set it to 1.',
    );
  }
}

/**
 * Connects to PostgreSQL (`postgres://`, `postgresql://`), MySQL/MariaDB (`mysql://`) or
 * SQLite (`sqlite:./app.db`, `sqlite::memory:`). Connections open lazily, on the first query.
 */
export function connect<DB>(url: string, options: ConnectOptions = {}): Database<DB> {
  const target = parseTarget(url);
  const dialect = target.dialect;
  if (target.dialect === 'sqlite') {
    checkMilliseconds('sqlite.busyTimeoutMs', options.sqlite?.busyTimeoutMs, 0);
    checkSqliteWorkers(target.path, options.sqlite?.workers);
  }
  const poolOptions = options.pool;
  const statementTimeoutMs = checkMilliseconds('statementTimeoutMs', options.statementTimeoutMs, Infinity, {
    allowInfinity: true,
  });
  checkMilliseconds('cancelGraceMs', options.cancelGraceMs, 0, { least: 1 });
  const { statementCacheSize } = options;
  if (statementCacheSize !== undefined && !(Number.isSafeInteger(statementCacheSize) && statementCacheSize >= 0)) {
    throw new InvalidOptionError('statementCacheSize', 'must be a whole number, 0 or more.');
  }
  const driver = lazyDriver(dialect, () => loadDriver(target, options));
  const pool = connectionPool<DriverConnection>(
    (signal) => driver.connect({ signal }),
    (error) => driver.isFatal(error),
    poolOptions,
  );
  const kyselyDriver = new PoolKyselyDriver(pool, driver, statementTimeoutMs);
  const db = new Kysely<DB>({
    dialect: new SluiceDialect(driver, kyselyDriver),
    ...(options.log !== undefined ? { log: options.log } : {}),
  });

  const transaction = async <T>(work: (trx: Transaction<DB>) => Promise<T>, txOptions: TransactionOptions = {}): Promise<T> => {
    const open = openTransactionOf(db);
    return withDeadline(txOptions, async () => {
      if (open?.kind === 'transaction') return savepoint(open, work);
      // Refused before a connection is taken.
      if (dialect === 'sqlite') checkSqliteTransaction({ ...(txOptions.isolation !== undefined ? { isolationLevel: txOptions.isolation } : {}) });
      // Inside a withConnection scope: on its connection.
      let builder = (open === undefined ? db : (open.trx as Kysely<DB>)).transaction();
      if (txOptions.isolation !== undefined) builder = builder.setIsolationLevel(txOptions.isolation);
      return builder.execute(async (trx) => {
        const root = { failure: undefined as unknown };
        const result = await openTransactions.run(
          { db, kind: 'transaction', trx, depth: 0, outer: openTransactions.getStore(), nestedTail: Promise.resolve(), root },
          () => work(trx),
        );
        // Throwing here makes Kysely roll the whole transaction back.
        if (root.failure !== undefined) {
          throw new TransactionRolledBackError(
            'A nested transaction failed and could not be undone to its savepoint, so the whole transaction was rolled back.',
            { cause: root.failure },
          );
        }
        return result;
      });
    });
  };

  const withConnection = <T>(work: () => Promise<T>, scopeOptions: DeadlineOptions = {}): Promise<T> => {
    const open = openTransactionOf(db);
    return withDeadline(scopeOptions, async () => {
      if (open !== undefined) return work();
      return db.connection().execute((scoped) =>
        openTransactions.run(
          {
            db,
            kind: 'connection',
            trx: scoped,
            depth: 0,
            outer: openTransactions.getStore(),
            // Unused by a connection scope (no savepoints are made in it): the shape of a transaction's.
            nestedTail: Promise.resolve(),
            root: { failure: undefined },
          },
          () => work(),
        ),
      );
    });
  };

  const database: Database<DB> = {
    dialect,
    location: locationOf(target),
    db,
    pool,
    withDeadline,
    transaction,
    withConnection,
    stats: () => pool.stats(),
    close: async () => {
      await db.destroy();
      await pool.close();
      await driver.close();
    },
  };
  pinners.set(database, (): Promise<TransactionPin> =>
    kyselyDriver.pinTransaction({
      insideScope: () => openTransactionOf(db) !== undefined,
      waitTimeoutMs: poolOptions?.acquireTimeoutMs ?? DEFAULT_ACQUIRE_TIMEOUT_MS,
    }),
  );
  writeObservers.set(database, (observer) => kyselyDriver.observers.add(observer));
  cacheIdentities.set(database, cacheIdentityOf(target));
  return database;
}

/** Each database connect() made: what the query cache keys its entries by (see cacheIdentity). */
const cacheIdentities = new WeakMap<object, string>();

/**
 * Which data a connect() sees, as a hash: the URL without its password (the user, host,
 * port, database and query string kept: another role, `search_path` or `options` may see
 * other rows), the host and path of a SQLite file; a random id for `sqlite::memory:`,
 * private to this connect(). A hash, so that no user or URL ends up in Redis keys.
 */
function cacheIdentityOf(target: Target): string {
  if (target.dialect === 'sqlite' && target.path === ':memory:') return randomBytes(16).toString('hex');
  let text: string;
  if (target.dialect === 'sqlite') {
    text = `sqlite\u0000${hostname()}\u0000${target.path}`;
  } else {
    const { username, hostname: host, port, pathname, searchParams } = target.url;
    const params = new URLSearchParams(searchParams);
    params.sort();
    text = [target.dialect, username, host, port, pathname, params.toString()].join('\u0000');
  }
  return createHash('sha256').update(text).digest('hex').slice(0, 32);
}

/**
 * The query cache's name for the data `database` sees: equal for two connect() calls with
 * the same URL (password aside), different for another user, query string or database.
 */
export function cacheIdentity<DB>(database: Database<DB>): string {
  const identity = cacheIdentities.get(database);
  if (identity === undefined) throw new InvalidOptionError('database', 'not a database made by connect().');
  return identity;
}

/** How to listen to the writes of each database connect() made (see observeWrites). */
const writeObservers = new WeakMap<object, (observer: WriteObserver) => () => void>();

/**
 * Tells `observer` of the writes made through `database` (Kysely-built INSERT, UPDATE,
 * DELETE and MERGE, through `database.db`, models, repositories and transactions), until
 * the function returned is called: how a query cache learns what to invalidate.
 */
export function observeWrites<DB>(database: Database<DB>, observer: WriteObserver): () => void {
  const observe = writeObservers.get(database);
  if (observe === undefined) throw new InvalidOptionError('database', 'not a database made by connect().');
  return observe(observer);
}

/** How to pin a transaction on each database connect() made (see pinTransaction). */
const pinners = new WeakMap<object, () => Promise<TransactionPin>>();

/**
 * Opens a transaction on one connection of `database` that every query made through it
 * then runs in, from any caller, until `end()` rolls it back: the per-test transaction of
 * `sluice/testing` (see pinned-transaction.ts for how the database behaves meanwhile).
 */
export function pinTransaction<DB>(database: Database<DB>): Promise<TransactionPin> {
  const pin = pinners.get(database);
  if (pin === undefined) throw new InvalidOptionError('database', 'not a database made by connect().');
  return pin();
}

async function savepoint<DB, T>(open: OpenTransaction, work: (trx: Transaction<DB>) => Promise<T>): Promise<T> {
  const turn = open.nestedTail;
  let done!: () => void;
  open.nestedTail = new Promise<void>((resolve) => (done = resolve));
  try {
    await turn;
    const trx = open.trx as Transaction<DB>;
    const name = sql.raw(`sluice_savepoint_${open.depth + 1}`);
    await sql`SAVEPOINT ${name}`.execute(trx);
    try {
      const result = await openTransactions.run(
        {
          db: open.db,
          kind: 'transaction',
          trx,
          depth: open.depth + 1,
          outer: openTransactions.getStore(),
          nestedTail: Promise.resolve(),
          root: open.root,
        },
        () => work(trx),
      );
      await sql`RELEASE SAVEPOINT ${name}`.execute(trx);
      return result;
    } catch (error) {
      // Undo only this level, even after its deadline passed; the outer transaction goes on.
      // If the undo fails too, the outer transaction must not commit this level's writes:
      // it is rolled back whole. The caller hears why this level failed.
      await withoutDeadline(() => sql`ROLLBACK TO SAVEPOINT ${name}`.execute(trx)).catch((undoError: unknown) => {
        open.root.failure ??= undoError;
      });
      throw error;
    }
  } finally {
    done();
  }
}
