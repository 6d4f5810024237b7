/**
 * The migration lock per database, plugged into Kysely's `Migrator` through the dialect
 * adapter (`acquireMigrationLock` / `releaseMigrationLock`). The Migrator calls them on the
 * one connection that then runs the migrations, so each lock lives exactly as long as that
 * session: a process that dies mid-run (or a connection that is lost) lets go of it, and
 * nothing is left to clean up by hand, unlike a lock row in a table.
 *
 * - PostgreSQL: a session-level `pg_advisory_lock`, keyed by the lock table's name (so two
 *   applications with their own migration tables in one database do not wait for each other).
 * - MySQL/MariaDB: `GET_LOCK`, named after the database and the lock table, since MySQL's
 *   named locks are server-wide: Kysely's own uses one name for every database of a server
 *   and does not look at GET_LOCK's answer (0 after its timeout, when it goes on unlocked).
 * - SQLite: the run's own `BEGIN IMMEDIATE` transaction (see `SqliteMigrationAdapter`).
 */
import { withoutDeadline } from '../deadline-scope.js';
import { createHash } from 'node:crypto';
import { AsyncLocalStorage } from 'node:async_hooks';
import {
  type Kysely,
  type MigrationLockOptions,
  MysqlAdapter,
  PostgresAdapter,
  sql,
  SqliteAdapter,
} from 'kysely';
import { DatabaseError } from '../../drivers/errors.js';
import { MigrationLockTimeoutError } from './migration-errors.js';

/** How one `migrate()` call waits for the lock. */
export interface LockSettings {
  /** How long to wait; `Infinity` for no limit. */
  readonly timeoutMs: number;
  /** Called once when the lock is taken by someone else and this run starts waiting. */
  readonly onWait?: () => void;
}

/** What a run waits for the lock when nobody says: long enough for a slow deploy's migrations. */
export const DEFAULT_LOCK_TIMEOUT_MS = 15 * 60_000;

/**
 * The adapter is made once by the dialect and Kysely tells it only the lock table's name: the
 * settings of the `migrate()` call in progress reach it through this scope.
 */
export const lockSettings = new AsyncLocalStorage<LockSettings>();

function currentSettings(): LockSettings {
  return lockSettings.getStore() ?? { timeoutMs: DEFAULT_LOCK_TIMEOUT_MS };
}

/** The lock table, qualified: what the lock is named after. */
function lockName(options: MigrationLockOptions): string {
  return `${options.lockTableSchema ?? ''}.${options.lockTable}`;
}

// Kysely's own signatures take Kysely<any>.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyKysely = Kysely<any>;

/** PostgreSQL: a session-level advisory lock on the migrations' connection. */
export class PostgresMigrationAdapter extends PostgresAdapter {
  override async acquireMigrationLock(db: AnyKysely, options: MigrationLockOptions): Promise<void> {
    const key = advisoryKey(lockName(options));
    const { rows } = await sql<{ locked: boolean }>`SELECT pg_try_advisory_lock(${key}::bigint) AS locked`.execute(db);
    if (rows[0]?.locked === true) return;
    const settings = currentSettings();
    settings.onWait?.();
    try {
      // lock_timeout for this statement only (set_config(..., true) ends with its implicit
      // transaction); 0 waits for ever.
      const limit = settings.timeoutMs === Infinity ? '0' : String(Math.max(1, Math.ceil(settings.timeoutMs)));
      await sql`WITH lock_limit AS (SELECT set_config('lock_timeout', ${limit}, true))
        SELECT pg_advisory_lock(${key}::bigint) FROM lock_limit`.execute(db);
    } catch (error) {
      // 55P03 lock_not_available: lock_timeout passed.
      if (error instanceof DatabaseError && error.sqlState === '55P03') throw new MigrationLockTimeoutError(settings.timeoutMs, error);
      throw error;
    }
  }

  override async releaseMigrationLock(db: AnyKysely, options: MigrationLockOptions): Promise<void> {
    await unlock(() => sql`SELECT pg_advisory_unlock(${advisoryKey(lockName(options))}::bigint)`.execute(db));
  }
}

/**
 * Releases the lock after the run, whatever ended it: outside the run's deadline and signal
 * (an aborted run must still unlock, as a failed savepoint is still rolled back), and never
 * throwing, so that the run's own error is the one the caller sees. An unlock that fails
 * anyway means the connection failed, and the lock ends with its session.
 */
async function unlock(release: () => Promise<unknown>): Promise<void> {
  await withoutDeadline(release).catch(() => {});
}

/** A signed 64-bit advisory lock key from a name, as text (bound as a parameter, cast to bigint). */
function advisoryKey(name: string): string {
  return createHash('sha256').update(`sluice migrations ${name}`).digest().readBigInt64BE(0).toString();
}

/** MySQL/MariaDB: a named lock (GET_LOCK) held by the migrations' connection. */
export class MysqlMigrationAdapter extends MysqlAdapter {
  override async acquireMigrationLock(db: AnyKysely, options: MigrationLockOptions): Promise<void> {
    if ((await getLock(db, options, 0)) === 1) return;
    const settings = currentSettings();
    settings.onWait?.();
    // GET_LOCK takes whole seconds; a negative timeout waits for ever.
    const seconds = settings.timeoutMs === Infinity ? -1 : Math.max(1, Math.ceil(settings.timeoutMs / 1000));
    const acquired = await getLock(db, options, seconds);
    if (acquired === 1) return;
    // 0: the timeout passed. NULL: an error (the server killed the wait, out of memory).
    if (acquired === 0) throw new MigrationLockTimeoutError(settings.timeoutMs);
    throw new MigrationLockTimeoutError(settings.timeoutMs, new Error('GET_LOCK returned NULL'));
  }

  override async releaseMigrationLock(db: AnyKysely, options: MigrationLockOptions): Promise<void> {
    await unlock(() => sql`SELECT RELEASE_LOCK(${mysqlLockName(options)})`.execute(db));
  }
}

/**
 * At most 64 characters (MySQL's limit on lock names): a digest of the database's name and the
 * lock table's, since named locks are shared by every database of a server.
 */
function mysqlLockName(options: MigrationLockOptions) {
  return sql<string>`CONCAT('sluice_migrate:', SHA1(CONCAT(COALESCE(DATABASE(), ''), ${lockName(options)})))`;
}

async function getLock(db: AnyKysely, options: MigrationLockOptions, seconds: number): Promise<number | null> {
  const { rows } = await sql<{ acquired: number | string | null }>`SELECT GET_LOCK(${mysqlLockName(options)}, ${seconds}) AS acquired`.execute(db);
  const acquired = rows[0]?.acquired;
  return acquired === null || acquired === undefined ? null : Number(acquired);
}

/**
 * SQLite: the lock is the run's own transaction. Saying `supportsTransactionalDdl` (which
 * SQLite has) makes the Migrator open one around the whole run, and sluice opens SQLite
 * transactions with `BEGIN IMMEDIATE`: SQLite's one write lock, taken at BEGIN, before the
 * Migrator reads which migrations have run, and held until COMMIT or ROLLBACK. A second
 * run, in this process (sluice's writer queue) or in another one (the file lock), cannot
 * begin until the first has ended, and then sees its migrations as done. Kysely's own
 * SQLite lock does nothing, which is right for one better-sqlite3 handle, not for sluice's
 * several workers, nor for two processes.
 *
 * A run that finds the lock taken fails at BEGIN with `BUSY` after `busyTimeoutMs`;
 * `migrate()` waits on by trying again until `lockTimeoutMs`.
 */
export class SqliteMigrationAdapter extends SqliteAdapter {
  override get supportsTransactionalDdl(): boolean {
    return true;
  }

  override async acquireMigrationLock(): Promise<void> {
    // The run's BEGIN IMMEDIATE takes the lock (see above).
  }

  override async releaseMigrationLock(): Promise<void> {
    // Its COMMIT or ROLLBACK lets go of it.
  }
}
