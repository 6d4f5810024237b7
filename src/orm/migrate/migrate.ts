import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import * as kysely from 'kysely';
import type { Migration, MigrationProvider, MigrationResult, MigrationResultSet, Migrator } from 'kysely';
import { SluiceError } from '../../errors.js';
import { checkMilliseconds } from '../../pool/options.js';
import type { Database } from '../connect.js';
import { withDeadline } from '../deadline-scope.js';
import { FolderMigrationProvider } from './folder-provider.js';
import { MigrationError, MigrationLockTimeoutError, MigrationsInvalidError } from './migration-errors.js';
import { DEFAULT_LOCK_TIMEOUT_MS, lockSettings } from './migration-lock.js';
import type { MigrationEvent, MigrationOutcome, MigrationRun, MigrationState } from './migration-outcome.js';

/** Where the migrations come from: a folder of `.js`/`.ts` files (each exporting `up`, and `down`), or your own provider. */
export type MigrationSource =
  | { readonly folder: string; readonly provider?: undefined }
  | { readonly provider: MigrationProvider; readonly folder?: undefined };

export type MigrationOptions = MigrationSource & {
  /** Default `kysely_migration`. */
  readonly migrationTableName?: string;
  /** Default `kysely_migration_lock` (created by Kysely; sluice's lock is not a row in it, but is named after it). */
  readonly migrationLockTableName?: string;
  /** The schema of both tables (PostgreSQL). */
  readonly migrationTableSchema?: string;
  /** How long to wait while another run holds the lock; then `MIGRATION_LOCK_TIMEOUT`. Default 15 minutes. */
  readonly lockTimeoutMs?: number;
  /** Aborting it cancels the statement running (on the server) and fails the run. */
  readonly signal?: AbortSignal;
  /** Progress as it happens: a wait for the lock, each migration's start and end. */
  readonly onEvent?: (event: MigrationEvent) => void;
};

/** Any `connect()` result: migrations use only its Kysely instance. */
// Migrations change the schema, so they are typed against no schema in particular.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type MigratableDatabase = Pick<Database<any>, 'db'>;

export type MigrationTarget = 'latest' | 'up' | 'down';

/** While a run meets another one's SQLite write lock, it tries again this often. */
const SQLITE_RETRY_MS = 100;

/**
 * Runs migrations with Kysely's `Migrator`, under the database's migration lock (two deploys
 * never migrate at once: the second waits, then finds nothing to do). `target`: `latest`
 * (default), `up` (the next one), `down` (undo the last one).
 *
 * Throws a `MigrationError` (`MIGRATION_FAILED`) naming the migration that failed; nothing
 * after it runs. Migrations run outside any statement timeout of `connect()` (an ALTER on a
 * big table may take long); an enclosing `withDeadline`, or `signal`, still applies.
 */
export async function migrate(
  database: MigratableDatabase,
  options: MigrationOptions & { readonly target?: MigrationTarget },
): Promise<MigrationRun> {
  const lockTimeoutMs = checkMilliseconds('lockTimeoutMs', options.lockTimeoutMs, DEFAULT_LOCK_TIMEOUT_MS, { allowInfinity: true });
  const timings = new Map<string, number>();
  const migrator = await migratorFor(database, options, timings);
  const target = options.target ?? 'latest';
  let waited = false;
  const onWait = (): void => {
    if (waited) return;
    waited = true;
    options.onEvent?.({ kind: 'lock-wait' });
  };
  const giveUpAt = performance.now() + lockTimeoutMs;
  // A deadline of its own (none, or the enclosing one): the default statement timeout does not apply.
  const resultSet = await withDeadline({ signal: options.signal }, () =>
    lockSettings.run({ timeoutMs: lockTimeoutMs, onWait }, async () => {
      for (;;) {
        const set = await runOnce(migrator, target);
        // SQLite: BUSY before any migration ran is the BEGIN IMMEDIATE of the run meeting
        // another run's write lock: nothing was done, so trying again is safe.
        if (!(set.results === undefined && isBusy(set.error))) return set;
        if (performance.now() >= giveUpAt) throw new MigrationLockTimeoutError(lockTimeoutMs, set.error);
        onWait();
        await sleep(Math.min(SQLITE_RETRY_MS, Math.max(0, giveUpAt - performance.now())), undefined, options.signal ? { signal: options.signal } : {});
      }
    }),
  );
  const transactional = database.db.getExecutor().adapter.supportsTransactionalDdl;
  return outcome(resultSet, transactional, timings);
}

export const migrateToLatest = (database: MigratableDatabase, options: MigrationOptions): Promise<MigrationRun> =>
  migrate(database, { ...options, target: 'latest' });
export const migrateUp = (database: MigratableDatabase, options: MigrationOptions): Promise<MigrationRun> =>
  migrate(database, { ...options, target: 'up' });
export const migrateDown = (database: MigratableDatabase, options: MigrationOptions): Promise<MigrationRun> =>
  migrate(database, { ...options, target: 'down' });

/** Every migration, in order, with when it was applied (`undefined`: pending). Takes no lock. */
export async function migrationStatus(database: MigratableDatabase, options: MigrationOptions): Promise<readonly MigrationState[]> {
  const migrator = await migratorFor(database, options, new Map());
  return withDeadline({ signal: options.signal }, async () => {
    try {
      const migrations = await migrator.getMigrations();
      return migrations.map((m) => ({ name: m.name, executedAt: m.executedAt }));
    } catch (error) {
      throw asSluiceError(error);
    }
  });
}

function runOnce(migrator: Migrator, target: MigrationTarget): Promise<MigrationResultSet> {
  switch (target) {
    case 'up':
      return migrator.migrateUp();
    case 'down':
      return migrator.migrateDown();
    default:
      return migrator.migrateToLatest();
  }
}

function isBusy(error: unknown): boolean {
  return error instanceof SluiceError && error.code === 'BUSY';
}

/**
 * Kysely's `Migrator` class: exported by `kysely` up to 0.28, by `kysely/migration` from
 * 0.29 on (whose `kysely` no longer has it). Looked up at run time, so that importing sluice
 * works with either.
 */
let migratorClass: Promise<typeof Migrator> | undefined;
function loadMigrator(): Promise<typeof Migrator> {
  migratorClass ??= (async () => {
    const fromRoot = (kysely as Record<string, unknown>)['Migrator'];
    if (typeof fromRoot === 'function') return fromRoot as typeof Migrator;
    // A variable, so that TypeScript (typed against 0.28, which has no such subpath) does not resolve it.
    const subpath = 'kysely/migration';
    return ((await import(subpath)) as { readonly Migrator: typeof Migrator }).Migrator;
  })();
  return migratorClass;
}

async function migratorFor(database: MigratableDatabase, options: MigrationOptions, timings: Map<string, number>): Promise<Migrator> {
  const source: MigrationProvider =
    options.provider ??
    new FolderMigrationProvider(path.resolve(checkFolder(options.folder)));
  const MigratorClass = await loadMigrator();
  return new MigratorClass({
    db: database.db,
    provider: timed(source, options.onEvent, timings),
    ...(options.migrationTableName !== undefined ? { migrationTableName: options.migrationTableName } : {}),
    ...(options.migrationLockTableName !== undefined ? { migrationLockTableName: options.migrationLockTableName } : {}),
    ...(options.migrationTableSchema !== undefined ? { migrationTableSchema: options.migrationTableSchema } : {}),
  });
}

function checkFolder(folder: string | undefined): string {
  if (typeof folder !== 'string' || folder === '') {
    throw new SluiceError('INVALID_OPTION', 'Invalid folder: pass { folder } (a directory of migration files) or { provider }.');
  }
  return folder;
}

/** The provider's migrations, each reporting its start, end and duration. */
function timed(source: MigrationProvider, onEvent: ((event: MigrationEvent) => void) | undefined, timings: Map<string, number>): MigrationProvider {
  const wrap =
    (name: string, direction: 'up' | 'down', step: Migration['up']): Migration['up'] =>
    async (db) => {
      onEvent?.({ kind: 'start', name, direction });
      const started = performance.now();
      let ok = false;
      try {
        await step(db);
        ok = true;
      } finally {
        const durationMs = performance.now() - started;
        timings.set(`${direction} ${name}`, durationMs);
        onEvent?.({ kind: 'end', name, direction, durationMs, ok });
      }
    };
  return {
    async getMigrations() {
      const migrations = await source.getMigrations();
      const wrapped: Record<string, Migration> = {};
      for (const [name, migration] of Object.entries(migrations)) {
        if (typeof migration?.up !== 'function') {
          throw new MigrationsInvalidError(`Migration ${name} exports no up() function.`, undefined);
        }
        wrapped[name] = {
          up: wrap(name, 'up', migration.up.bind(migration)),
          ...(migration.down !== undefined ? { down: wrap(name, 'down', migration.down.bind(migration)) } : {}),
        };
      }
      return wrapped;
    },
  };
}

function outcome(set: MigrationResultSet, transactional: boolean, timings: ReadonlyMap<string, number>): MigrationRun {
  const failed = set.error !== undefined;
  const results = (set.results ?? []).map((result: MigrationResult): MigrationOutcome => {
    const direction = result.direction === 'Up' ? 'up' : 'down';
    const durationMs = timings.get(`${direction} ${result.migrationName}`);
    const status: MigrationOutcome['status'] =
      result.status === 'Error'
        ? 'failed'
        : result.status === 'NotExecuted'
          ? 'not run'
          : failed && transactional
            ? 'rolled back'
            : direction === 'up'
              ? 'applied'
              : 'reverted';
    return { name: result.migrationName, direction, status, ...(durationMs !== undefined && status !== 'not run' ? { durationMs } : {}) };
  });
  if (!failed) return { results };
  const culprit = results.find((result) => result.status === 'failed');
  if (culprit !== undefined) throw new MigrationError(culprit.name, culprit.direction, results, set.error);
  throw asSluiceError(set.error);
}

/** A failure before any migration ran: sluice's own errors as they are, Kysely's checks as MIGRATIONS_INVALID. */
function asSluiceError(error: unknown): SluiceError {
  if (error instanceof SluiceError) return error;
  // Kysely's messages here name migrations ("corrupted migrations: ..."), never a secret.
  const message = error instanceof Error ? error.message : String(error);
  return new MigrationsInvalidError(`The migrations cannot run: ${message}`, error);
}
