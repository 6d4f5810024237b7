import { createRequire } from 'node:module';
import { isAbsolute } from 'node:path';
import type { ResourceLimits } from 'node:worker_threads';
import { InvalidOptionError } from '../../errors.js';
import type { CancelSignal, ConnectOptions, Driver, DriverConnection, RunOptions, StatementResult } from '../driver.js';
import { ConnectionError } from '../errors.js';
import { type OffloadedConnection, startOffloadedConnection } from '../offload/offload-host.js';
import type { SqliteConfig } from './sqlite-connection.js';
import { busyError, isFatalSqliteError, translateSqliteError } from './sqlite-errors.js';
import { statementKind } from './statement-kind.js';
import { releaseWriterLock, WriterLock, writerLockFor } from './writer-lock.js';

/** Settings for `SqliteDriver`. */
export interface SqliteDriverConfig {
  /** An absolute path to the database file (created if missing), or `:memory:`. */
  readonly path: string;
  /**
   * How long a writer waits for the database's write lock before failing with `BUSY`
   * (retryable), whether the lock is held by another connection of this process (queued
   * in sluice) or by another process (SQLite's own busy timeout). Default 5 s: long enough
   * to ride out ordinary transactions, short enough to report a lock that is stuck.
   */
  readonly busyTimeoutMs?: number;
  /** Prepared statements kept per worker, least recently used out. Default 100. */
  readonly statementCacheSize?: number;
  /** Integers read back as `bigint` (exact beyond 2^53) instead of `number`. Default false. */
  readonly bigints?: boolean;
  /** Heap limits of each worker thread. */
  readonly resourceLimits?: ResourceLimits;
}

const MEMORY = ':memory:';

/** The worker-side module, next to this one: `.ts` when running from source, `.js` once built. */
const WORKER_MODULE = new URL(import.meta.url.endsWith('.ts') ? './sqlite-connection.ts' : './sqlite-connection.js', import.meta.url);

/**
 * SQLite through better-sqlite3, each connection a worker thread of the offload host: a
 * statement blocks its worker, never the event loop, and one past its deadline gets its
 * worker terminated (the pool replaces it).
 *
 * SQLite lets one connection write at a time. The driver queues writers in the process
 * (first come, first served) instead of letting them spin on SQLITE_BUSY: a statement
 * that writes holds the lock while it runs, a transaction from its BEGIN until its end.
 * Reads run beside them on other workers (WAL).
 */
export class SqliteDriver implements Driver {
  readonly dialect = 'sqlite';
  /**
   * The most connections this database can be served by: 1 for `:memory:` (each
   * connection would see its own, empty, database), else unbounded.
   */
  readonly maxConnections: number;
  readonly #config: SqliteConfig;
  readonly #resourceLimits: ResourceLimits | undefined;
  readonly #lock: WriterLock;
  #closed = false;

  constructor(config: SqliteDriverConfig) {
    const { path } = config;
    if (typeof path !== 'string' || (path !== MEMORY && !isAbsolute(path))) {
      throw new InvalidOptionError('path', 'must be an absolute file path or ":memory:"');
    }
    // SQLite counts the busy timeout in whole milliseconds.
    const busyTimeoutMs = Math.ceil(config.busyTimeoutMs ?? 5_000);
    if (!(busyTimeoutMs >= 0 && busyTimeoutMs <= 0x7fffffff)) {
      throw new InvalidOptionError('busyTimeoutMs', 'must be a number of milliseconds from 0 to 2147483647');
    }
    const statementCacheSize = config.statementCacheSize ?? 100;
    if (!Number.isSafeInteger(statementCacheSize) || statementCacheSize < 0) {
      throw new InvalidOptionError('statementCacheSize', 'must be a whole number, 0 or more');
    }
    this.#config = { path, busyTimeoutMs, statementCacheSize, bigints: config.bigints === true };
    this.#resourceLimits = config.resourceLimits;
    this.maxConnections = path === MEMORY ? 1 : Infinity;
    // Every :memory: database is its own; files share one lock per path in the process.
    this.#lock = path === MEMORY ? new WriterLock() : writerLockFor(path);
  }

  async connect({ signal }: ConnectOptions): Promise<DriverConnection> {
    if (signal.aborted) throw signal.reason;
    const target = this.#config.path;
    assertInstalled(target);
    const inner = await startOffloadedConnection<SqliteConfig>(
      {
        module: WORKER_MODULE,
        config: this.#config,
        translateError: (error) => translateSqliteError(error, target),
        name: 'sqlite',
        ...(this.#resourceLimits !== undefined ? { resourceLimits: this.#resourceLimits } : {}),
      },
      { signal },
    );
    return new SqliteConnection(inner, this.#lock, this.#config.busyTimeoutMs, target);
  }

  isFatal(error: unknown): boolean {
    return isFatalSqliteError(error);
  }

  /** Lets go of the shared write lock's registration. Connections are closed by their owner. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#config.path !== MEMORY) releaseWriterLock(this.#config.path);
  }
}

let installed = false;

/** better-sqlite3 is an optional peer: say so clearly (and at once) when it is missing. */
function assertInstalled(target: string): void {
  if (installed) return;
  try {
    createRequire(import.meta.url).resolve('better-sqlite3');
    installed = true;
  } catch (error) {
    throw new ConnectionError(
      'CANNOT_OPEN',
      `Cannot open SQLite database ${target}: the better-sqlite3 package is not installed (npm install better-sqlite3).`,
      { cause: error },
    );
  }
}

/**
 * One worker's connection, behind the database's write lock. A statement that writes
 * takes the lock for as long as it runs; a BEGIN takes it until COMMIT, ROLLBACK or END
 * (or until the connection is reset or closed); reads never wait for it.
 *
 * A worker terminated while it holds the lock (a deadline passed) keeps SQLite's own lock
 * on the file until its thread is gone (a statement in native code runs to its end), so
 * the lock passes on only once the worker has exited: the next writer then starts at once
 * instead of spinning on SQLITE_BUSY.
 */
class SqliteConnection implements DriverConnection {
  readonly #inner: OffloadedConnection;
  readonly #lock: WriterLock;
  readonly #busyTimeoutMs: number;
  readonly #target: string;
  /** Whether this connection holds the lock, and for how long. */
  #holding: 'no' | 'statement' | 'transaction' = 'no';
  /** Set when a statement failed in a way that leaves the worker's connection untrustworthy. */
  #fatal = false;

  constructor(inner: OffloadedConnection, lock: WriterLock, busyTimeoutMs: number, target: string) {
    this.#inner = inner;
    this.#lock = lock;
    this.#busyTimeoutMs = busyTimeoutMs;
    this.#target = target;
  }

  get broken(): boolean {
    return this.#fatal || this.#inner.broken;
  }

  onBroken(listener: (error: unknown) => void): void {
    this.#inner.onBroken(listener);
  }

  async run<Row>(sql: string, parameters: readonly unknown[], options?: RunOptions): Promise<StatementResult<Row>> {
    const kind = statementKind(sql);
    if (this.#holding === 'transaction' || kind === 'read' || kind === 'end') {
      // Inside our own transaction, a read, or an END with no transaction of ours (which
      // SQLite refuses on its own): no lock to take.
      const result = await this.#run<Row>(sql, parameters, options);
      if (kind === 'end') this.#releaseLock();
      return result;
    }
    await this.#takeLock(options?.signal);
    this.#holding = kind === 'begin' ? 'transaction' : 'statement';
    let opened = false;
    try {
      const result = await this.#run<Row>(sql, parameters, options);
      opened = kind === 'begin';
      return result;
    } finally {
      if (!opened) this.#releaseLock();
    }
  }

  async ping(options?: RunOptions): Promise<void> {
    await this.#inner.ping(options);
  }

  async reset(): Promise<void> {
    try {
      await this.#inner.reset();
    } catch (error) {
      this.#fatal = true;
      throw error;
    } finally {
      // Rolled back, or about to be closed: either way this connection writes no more.
      this.#releaseLock();
    }
  }

  async close(): Promise<void> {
    // A transaction still open is rolled back as the worker closes its database.
    const closing = this.#inner.close();
    this.#releaseLock(true);
    await closing;
  }

  async #run<Row>(sql: string, parameters: readonly unknown[], options: RunOptions | undefined): Promise<StatementResult<Row>> {
    try {
      return await this.#inner.run<Row>(sql, parameters, options);
    } catch (error) {
      if (isFatalSqliteError(error)) this.#fatal = true;
      throw error;
    }
  }

  async #takeLock(signal: CancelSignal | undefined): Promise<void> {
    await this.#lock.acquire(signal, this.#busyTimeoutMs, () =>
      busyError(
        `SQLite database ${this.#target}: waited ${this.#busyTimeoutMs} ms (busyTimeoutMs) for its turn at the write lock, ` +
          'which other writers of this process held all that time. Keep transactions short, or retry.',
        { cause: undefined },
      ),
    );
  }

  /**
   * Gives the lock back if this connection holds it: at once if its worker is healthy,
   * else (or when `afterExit`) once the worker's thread is gone: it holds SQLite's file
   * lock until then.
   */
  #releaseLock(afterExit = false): void {
    if (this.#holding === 'no') return;
    this.#holding = 'no';
    const lock = this.#lock;
    if (!afterExit && !this.#inner.broken && !this.#fatal) {
      lock.release();
      return;
    }
    const release = (): void => lock.release();
    this.#inner.exited.then(release, release);
  }
}
