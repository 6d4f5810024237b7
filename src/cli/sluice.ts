#!/usr/bin/env node
/**
 * The `sluice` command: `sluice migrate latest|up|down|status|make <name>`.
 * The database comes from `--url` or `DATABASE_URL`, and is only ever printed as host and
 * database (or the SQLite file): a URL may hold a password.
 */
import { Command, Option } from 'commander';
import path from 'node:path';
import { connect, type Database } from '../orm/connect.js';
import { describeError, SluiceError } from '../errors.js';
import { migrate, migrationStatus, type MigrationTarget } from '../orm/migrate/migrate.js';
import { makeMigration } from '../orm/migrate/migration-file.js';
import { MigrationError } from '../orm/migrate/migration-errors.js';
import type { MigrationEvent } from '../orm/migrate/migration-outcome.js';

interface ConnectionFlags {
  readonly url?: string;
  readonly folder: string;
  readonly lockTimeout?: string;
  readonly table?: string;
}

/** Kysely's table names, from --table: the lock table is named after the migration table. */
function tables(flags: ConnectionFlags): { readonly migrationTableName?: string; readonly migrationLockTableName?: string } {
  return flags.table === undefined ? {} : { migrationTableName: flags.table, migrationLockTableName: `${flags.table}_lock` };
}

function databaseUrl(flags: ConnectionFlags): string {
  const url = flags.url ?? process.env.DATABASE_URL;
  if (url === undefined || url === '') {
    throw new SluiceError('INVALID_OPTION', 'No database: pass --url <url> or set DATABASE_URL.');
  }
  return url;
}

function open(flags: ConnectionFlags): { readonly database: Database<unknown>; readonly where: string } {
  const url = databaseUrl(flags);
  // A small SQLite busy timeout: a run that meets another one's lock hears BUSY soon, says it
  // is waiting, and migrate() tries again until --lock-timeout. It does nothing else here.
  const database = connect<unknown>(url, { pool: { max: 2 }, sqlite: { busyTimeoutMs: 200 } });
  return { database, where: database.location };
}

function lockTimeoutMs(flags: ConnectionFlags): number | undefined {
  if (flags.lockTimeout === undefined) return undefined;
  const seconds = Number(flags.lockTimeout);
  if (!(seconds >= 0)) throw new SluiceError('INVALID_OPTION', 'Invalid --lock-timeout: a number of seconds.');
  return seconds * 1000;
}

function print(event: MigrationEvent): void {
  switch (event.kind) {
    case 'lock-wait':
      console.log('Waiting for the migration lock: another migration run holds it on this database.');
      return;
    case 'start':
      return;
    case 'end':
      console.log(`  ${event.ok ? (event.direction === 'up' ? 'up  ' : 'down') : 'FAIL'} ${event.name} (${formatMs(event.durationMs)})`);
  }
}

function formatMs(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

async function runMigrations(target: MigrationTarget, flags: ConnectionFlags): Promise<void> {
  const { database, where } = open(flags);
  const folder = path.resolve(flags.folder);
  console.log(`Migrating ${where} (${target}) from ${folder}`);
  const started = performance.now();
  try {
    const timeout = lockTimeoutMs(flags);
    const run = await migrate(database, { folder, target, onEvent: print, ...tables(flags), ...(timeout !== undefined ? { lockTimeoutMs: timeout } : {}) });
    const done = run.results.filter((result) => result.status === 'applied' || result.status === 'reverted');
    if (done.length === 0) console.log('Nothing to do: no migration to run.');
    else {
      const verb = target === 'down' ? 'Reverted' : 'Applied';
      console.log(`${verb} ${done.length} migration${done.length === 1 ? '' : 's'} in ${formatMs(performance.now() - started)}.`);
    }
  } catch (error) {
    if (error instanceof MigrationError) {
      const undone = error.results.filter((result) => result.status === 'rolled back').map((result) => result.name);
      const skipped = error.results.filter((result) => result.status === 'not run').map((result) => result.name);
      console.error(`Migration ${error.migrationName} failed (${error.direction}).`);
      // A database error's message is the server's; anything else is named, never quoted
      // (it could hold a secret), as MigrationError itself does.
      if (error.cause !== undefined) {
        console.error(`  cause: ${error.cause instanceof SluiceError ? `${error.cause.code}: ${error.cause.message}` : describeError(error.cause)}`);
      }
      if (undone.length > 0) console.error(`  rolled back with it (one transaction per run): ${undone.join(', ')}`);
      if (skipped.length > 0) console.error(`  not run: ${skipped.join(', ')}`);
      if (!database.db.getExecutor().adapter.supportsTransactionalDdl) {
        console.error('  MySQL/MariaDB commit each DDL statement: what the failed migration did before it failed stays.');
      }
      process.exitCode = 1;
      return;
    }
    throw error;
  } finally {
    await database.close();
  }
}

async function printStatus(flags: ConnectionFlags): Promise<void> {
  const { database, where } = open(flags);
  try {
    const states = await migrationStatus(database, { folder: path.resolve(flags.folder), ...tables(flags) });
    console.log(`Migrations of ${where}:`);
    if (states.length === 0) console.log('  (none in the folder)');
    for (const state of states) {
      console.log(`  ${state.executedAt === undefined ? 'pending' : 'applied'} ${state.name}${state.executedAt ? ` (${state.executedAt.toISOString()})` : ''}`);
    }
    const pending = states.filter((state) => state.executedAt === undefined).length;
    console.log(`${states.length - pending} applied, ${pending} pending.`);
  } finally {
    await database.close();
  }
}

function withConnectionFlags(command: Command): Command {
  return command
    .addOption(new Option('--url <url>', 'database URL (postgres://, mysql://, sqlite:./app.db); default: $DATABASE_URL'))
    .option('--folder <dir>', 'folder of migration files', './migrations')
    .option('--lock-timeout <seconds>', 'how long to wait for another run to finish (default 900)')
    .option('--table <name>', 'the table recording applied migrations (default kysely_migration; its lock table: <name>_lock)');
}

export function program(): Command {
  const root = new Command('sluice').description('sluice: database pool and query layer tools').showHelpAfterError();
  const migrateCommand = root.command('migrate').description('run, revert and create database migrations');
  withConnectionFlags(migrateCommand.command('latest').description('apply every pending migration')).action((flags: ConnectionFlags) =>
    runMigrations('latest', flags),
  );
  withConnectionFlags(migrateCommand.command('up').description('apply the next pending migration')).action((flags: ConnectionFlags) =>
    runMigrations('up', flags),
  );
  withConnectionFlags(migrateCommand.command('down').description('revert the last applied migration')).action((flags: ConnectionFlags) =>
    runMigrations('down', flags),
  );
  withConnectionFlags(migrateCommand.command('status').description('list the migrations, applied and pending')).action((flags: ConnectionFlags) =>
    printStatus(flags),
  );
  migrateCommand
    .command('make')
    .description('write a new migration file, <timestamp>_<name>.ts, into the folder')
    .argument('<name>', 'what it does, e.g. create_person')
    .option('--folder <dir>', 'folder of migration files', './migrations')
    .option('--js', 'write a .js file instead of .ts')
    .action(async (name: string, flags: { readonly folder: string; readonly js?: boolean }) => {
      const file = await makeMigration(flags.folder, name, { language: flags.js === true ? 'js' : 'ts' });
      console.log(`Created ${path.relative(process.cwd(), file)}`);
    });
  return root;
}

try {
  await program().parseAsync(process.argv);
} catch (error) {
  // SluiceError messages carry no secret; anything else is named by its class only.
  console.error(error instanceof SluiceError ? `${error.code}: ${error.message}` : `sluice: ${describeError(error)}`);
  process.exitCode = 1;
}
