import { describeError, SluiceError } from '../../errors.js';
import type { MigrationOutcome } from './migration-outcome.js';

/**
 * A migration failed: `migrationName` says which, `cause` holds its error, `results` what
 * happened to every migration of the run. Nothing after it ran. On PostgreSQL and SQLite the
 * run was one transaction, rolled back whole (the migrations before it in this run are
 * `rolled back` in `results`); on MySQL/MariaDB each DDL statement commits itself, so what
 * the failed migration did before its failing statement stays.
 */
export class MigrationError extends SluiceError {
  readonly migrationName: string;
  readonly direction: 'up' | 'down';
  readonly results: readonly MigrationOutcome[];

  constructor(migrationName: string, direction: 'up' | 'down', results: readonly MigrationOutcome[], cause: unknown) {
    // A database error's message comes from the server; any other error is named only
    // (a user's error could say anything), and stays whole as `cause`.
    const why = cause instanceof SluiceError ? `${cause.code}: ${cause.message}` : describeError(cause);
    super('MIGRATION_FAILED', `Migration ${migrationName} failed (${direction}): ${why}`, { cause });
    this.migrationName = migrationName;
    this.direction = direction;
    this.results = results;
  }
}

/** Another migration (on SQLite, any writer) held the lock for longer than `lockTimeoutMs`: nothing ran. */
export class MigrationLockTimeoutError extends SluiceError {
  readonly timeoutMs: number;

  constructor(timeoutMs: number, cause?: unknown) {
    super(
      'MIGRATION_LOCK_TIMEOUT',
      `Waited ${timeoutMs} ms (lockTimeoutMs) for the migration lock, which another migration run held all that time ` +
        '(on SQLite: any writer, since the lock is the write lock). Nothing was migrated.',
      { cause },
    );
    this.timeoutMs = timeoutMs;
  }
}

/**
 * The migrations cannot run as they are: one already applied is missing from the folder,
 * they are out of order, a file exports no `up`, or a `migrationTo` target does not exist.
 * Nothing ran.
 */
export class MigrationsInvalidError extends SluiceError {
  constructor(message: string, cause: unknown) {
    super('MIGRATIONS_INVALID', message, { cause });
  }
}
