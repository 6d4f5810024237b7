import { createRequire } from 'node:module';
import { isAbsolute } from 'node:path';
import type { ResourceLimits } from 'node:worker_threads';
import { InvalidOptionError } from '../../errors.js';
import type { ConnectOptions, Driver, DriverConnection } from '../driver.js';
import { ConnectionError, ConnectionLostError } from '../errors.js';
import { startOffloadedConnection } from '../offload/offload-host.js';
import type { SqliteConfig } from './sqlite-connection.js';
import { isFatalSqliteError, translateSqliteError } from './sqlite-errors.js';
import { SqliteSession } from './sqlite-session.js';
import { WorkerSet, WRITER } from './worker-set.js';
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
  /**
   * Worker threads, shared by all the driver's sessions. Default 4 for a file (one writes at
   * a time, the others read beside it; each has its own heap and page cache), and 1 for
   * `:memory:`, which must be 1: a second worker would open its own, empty, database.
   */
  readonly workers?: number;
}

const MEMORY = ':memory:';

/** The worker-side module, next to this one: `.ts` when running from source, `.js` once built. */
const WORKER_MODULE = new URL(import.meta.url.endsWith('.ts') ? './sqlite-connection.ts' : './sqlite-connection.js', import.meta.url);

/**
 * SQLite through better-sqlite3 in worker threads of the offload host: a statement blocks
 * its worker, never the event loop, and one past its deadline gets its worker terminated
 * (and replaced).
 *
 * The driver owns a small set of workers (`workers`, started lazily); what `connect()` gives
 * the pool is a session over them (see `SqliteSession`), so the pool's `max` bounds callers,
 * not threads, and many sessions' statements are pipelined to the same workers. SQLite lets
 * one connection write at a time: autocommit writes all go to one worker, and a transaction
 * waits for them to drain, in a write lock shared per database file in this process.
 */
export class SqliteDriver implements Driver {
  readonly dialect = 'sqlite';
  /** The worker threads its sessions share. */
  readonly workers: number;
  readonly #config: SqliteConfig;
  readonly #lock: WriterLock;
  readonly #set: WorkerSet;
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
    const workers = config.workers ?? (path === MEMORY ? 1 : 4);
    if (!Number.isSafeInteger(workers) || workers < 1 || workers > 64) {
      throw new InvalidOptionError('workers', 'must be a whole number from 1 to 64');
    }
    if (path === MEMORY && workers !== 1) {
      throw new InvalidOptionError(
        'workers',
        'a sqlite::memory: database lives in a single worker (a second one would see its own empty database): leave workers out, or set it to 1.',
      );
    }
    this.workers = workers;
    this.#config = { path, busyTimeoutMs, statementCacheSize, bigints: config.bigints === true };
    const resourceLimits = config.resourceLimits;
    const sqliteConfig = this.#config;
    this.#set = new WorkerSet(workers, (signal) => {
      assertInstalled(path);
      return startOffloadedConnection<SqliteConfig>(
        {
          module: WORKER_MODULE,
          config: sqliteConfig,
          translateError: (error) => translateSqliteError(error, path),
          name: 'sqlite',
          ...(resourceLimits !== undefined ? { resourceLimits } : {}),
        },
        { signal },
      );
    });
    // Every :memory: database is its own; files share one lock per path in the process.
    this.#lock = path === MEMORY ? new WriterLock() : writerLockFor(path);
  }

  /**
   * A new session. Resolves once a worker is open, so a database that cannot be opened
   * fails here, at connect (CANNOT_OPEN, permanent), as with the other databases.
   */
  async connect({ signal }: ConnectOptions): Promise<DriverConnection> {
    if (signal.aborted) throw signal.reason;
    if (this.#closed) throw new ConnectionLostError('The SQLite driver is closed.', { cause: undefined });
    assertInstalled(this.#config.path);
    await untilOpen(this.#set.connection(WRITER), signal);
    return new SqliteSession(this.#set, this.#lock, this.#config.busyTimeoutMs, this.#config.path);
  }

  isFatal(error: unknown): boolean {
    return isFatalSqliteError(error);
  }

  /** Closes the workers (after the pool closed the sessions) and lets go of the write lock's registration. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#set.close();
    if (this.#config.path !== MEMORY) releaseWriterLock(this.#config.path);
  }
}

/** Resolves once the worker is open; rejects with the signal's reason if it aborts first. */
function untilOpen(opening: Promise<unknown>, signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    opening.then(
      () => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error);
      },
    );
  });
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
