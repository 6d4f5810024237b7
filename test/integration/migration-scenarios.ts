/**
 * The migration tests, run against each database by migrations-<backend>.test.ts: the API
 * (latest, up, down, status, a failing migration, the lock and its timeout) and the `sluice`
 * CLI run as child processes (the same, and two deploys racing for the lock).
 */
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Kysely, type Migration, sql } from 'kysely';
import { afterEach, expect, test } from 'vitest';
import { SluiceError } from '../../src/errors.js';
import { connect, type ConnectOptions, type Database } from '../../src/orm/connect.js';
import { migrateDown, migrateToLatest, migrateUp, migrationStatus } from '../../src/orm/migrate/migrate.js';
import { MigrationError, MigrationLockTimeoutError } from '../../src/orm/migrate/migration-errors.js';
import { runNode, startNode } from '../support/run-node.js';

export const CLI = fileURLToPath(new URL('../../src/cli/sluice.ts', import.meta.url));
/** Inside the project, so that migration files written there resolve `kysely`. */
export const SCRATCH = fileURLToPath(new URL('../../.tmp/', import.meta.url));

export interface MigrationBackend {
  /** The database for one test: SQLite gets a new file each time, the servers are shared. */
  readonly url: () => Promise<string>;
  /** PostgreSQL and SQLite roll a failed run back; MySQL/MariaDB commit each DDL statement. */
  readonly transactionalDdl: boolean;
  /** The same URL with a password in it that the server ignores, to prove the CLI never prints it. */
  readonly urlWithPassword?: (url: string) => string;
  /** Connect options for a second handle on the same database (SQLite: a short busy timeout). */
  readonly connectOptions?: ConnectOptions;
}

// Migrations are untyped: they run against whatever the schema is.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyDb = Kysely<any>;

/** A unique prefix for one test's tables and folder. */
export function uniquePrefix(): string {
  return `mg_${randomUUID().replaceAll('-', '').slice(0, 10)}`;
}

/** The tables whose names start with `prefix`, sorted. */
export async function tablesWith(database: Database<unknown>, prefix: string): Promise<string[]> {
  const tables = await database.db.introspection.getTables({ withInternalKyselyTables: true });
  return tables
    .map((table) => table.name)
    .filter((name) => name.startsWith(prefix))
    .sort();
}

function createTable(name: string): Migration['up'] {
  return (db: AnyDb) => db.schema.createTable(name).addColumn('id', 'integer').execute();
}
function dropTable(name: string): Migration['up'] {
  return (db: AnyDb) => db.schema.dropTable(name).execute();
}

/** A migration file's text: `up` and `down` bodies written in TypeScript, with `sql` and `db` in scope. */
export function migrationFile(up: string, down = ''): string {
  return `import { sql } from 'kysely';
import { existsSync, writeFileSync } from 'node:fs';
void sql; void existsSync; void writeFileSync;
export async function up(db: any): Promise<void> {
  ${up}
}
export async function down(db: any): Promise<void> {
  ${down}
}
`;
}

export async function writeMigrations(folder: string, files: Readonly<Record<string, string>>): Promise<void> {
  await mkdir(folder, { recursive: true });
  for (const [name, text] of Object.entries(files)) await writeFile(path.join(folder, `${name}.ts`), text);
}

export function migrationScenarios(backend: MigrationBackend): void {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  /** A database handle, and a prefix whose tables (and scratch folder) are dropped after the test. */
  async function setup(): Promise<{ database: Database<unknown>; url: string; prefix: string; folder: string }> {
    const url = await backend.url();
    const database = connect<unknown>(url, { pool: { max: 4 } });
    const prefix = uniquePrefix();
    const folder = path.join(SCRATCH, prefix);
    cleanups.push(async () => {
      for (const table of await tablesWith(database, prefix)) await sql`DROP TABLE IF EXISTS ${sql.table(table)}`.execute(database.db);
      await database.close();
      await rm(folder, { recursive: true, force: true });
    });
    return { database, url, prefix, folder };
  }

  test('latest, up, down and status through the API, recorded in the migration table', async () => {
    const { database, prefix } = await setup();
    const [a, b] = [`001_${prefix}_a`, `002_${prefix}_b`];
    const options = {
      provider: {
        getMigrations: async () => ({
          [a]: { up: createTable(`${prefix}_a`), down: dropTable(`${prefix}_a`) },
          [b]: { up: createTable(`${prefix}_b`), down: dropTable(`${prefix}_b`) },
        }),
      },
      migrationTableName: `${prefix}_migration`,
      migrationLockTableName: `${prefix}_migration_lock`,
    };
    const pending = (states: readonly { executedAt: Date | undefined }[]): boolean[] => states.map((s) => s.executedAt === undefined);
    const userTables = async (): Promise<string[]> => (await tablesWith(database, prefix)).filter((name) => !name.includes('migration'));

    expect(pending(await migrationStatus(database, options))).toEqual([true, true]);
    const up = await migrateUp(database, options);
    expect(up.results).toMatchObject([{ name: a, direction: 'up', status: 'applied' }]);
    expect(up.results[0]?.durationMs).toBeGreaterThanOrEqual(0);
    expect(await userTables()).toEqual([`${prefix}_a`]);
    expect(pending(await migrationStatus(database, options))).toEqual([false, true]);

    expect((await migrateToLatest(database, options)).results).toMatchObject([{ name: b, status: 'applied' }]);
    expect(await userTables()).toEqual([`${prefix}_a`, `${prefix}_b`]);
    expect((await migrateToLatest(database, options)).results).toEqual([]);

    expect((await migrateDown(database, options)).results).toMatchObject([{ name: b, direction: 'down', status: 'reverted' }]);
    expect(await userTables()).toEqual([`${prefix}_a`]);
    const states = await migrationStatus(database, options);
    expect(states.map((s) => s.name)).toEqual([a, b]);
    expect(pending(states)).toEqual([false, true]);
  });

  test('a failing migration stops the run, is named in a MIGRATION_FAILED error, and nothing after it runs', async () => {
    const { database, prefix } = await setup();
    const [one, two, three] = [`001_${prefix}_one`, `002_${prefix}_two`, `003_${prefix}_three`];
    let thirdRan = false;
    const options = {
      provider: {
        getMigrations: async () => ({
          [one]: { up: createTable(`${prefix}_one`) },
          [two]: {
            up: async (db: AnyDb) => {
              await createTable(`${prefix}_two`)(db);
              await sql`SELECT * FROM ${sql.table(`${prefix}_no_such_table`)}`.execute(db);
            },
          },
          [three]: {
            up: async (db: AnyDb) => {
              thirdRan = true;
              await createTable(`${prefix}_three`)(db);
            },
          },
        }),
      },
      migrationTableName: `${prefix}_migration`,
      migrationLockTableName: `${prefix}_migration_lock`,
    };
    const error = await migrateToLatest(database, options).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(MigrationError);
    expect(error).toMatchObject({ code: 'MIGRATION_FAILED', migrationName: two, direction: 'up' });
    expect((error as Error).message).toContain(two);
    expect((error as Error).cause).toBeInstanceOf(SluiceError);
    expect(thirdRan).toBe(false);
    const statuses = (error as MigrationError).results.map((r) => [r.name, r.status]);
    const created = (await tablesWith(database, prefix)).filter((name) => !name.includes('migration'));
    const applied = (await migrationStatus(database, options)).map((s) => s.executedAt !== undefined);
    if (backend.transactionalDdl) {
      // One transaction for the run: the failed migration and the one before it are undone.
      expect(statuses).toEqual([[one, 'rolled back'], [two, 'failed'], [three, 'not run']]);
      expect(created).toEqual([]);
      expect(applied).toEqual([false, false, false]);
    } else {
      // MySQL/MariaDB: every DDL statement commits itself. The first migration is applied and
      // recorded; the failed one is not recorded, but the table it made before failing stays.
      expect(statuses).toEqual([[one, 'applied'], [two, 'failed'], [three, 'not run']]);
      expect(created).toEqual([`${prefix}_one`, `${prefix}_two`]);
      expect(applied).toEqual([true, false, false]);
    }
  });

  test('the lock: a second run waits while the first holds it, then finds nothing to do; past lockTimeoutMs it gives up', async () => {
    const { database, url, prefix } = await setup();
    const other = connect<unknown>(url, { pool: { max: 2 }, ...backend.connectOptions });
    cleanups.push(() => other.close());
    let runs = 0;
    let inside!: () => void;
    const entered = new Promise<void>((resolve) => (inside = resolve));
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const options = {
      provider: {
        getMigrations: async () => ({
          [`001_${prefix}_slow`]: {
            up: async (db: AnyDb) => {
              runs++;
              await createTable(`${prefix}_slow`)(db);
              inside();
              await gate;
            },
          },
        }),
      },
      migrationTableName: `${prefix}_migration`,
      migrationLockTableName: `${prefix}_migration_lock`,
    };
    const first = migrateToLatest(database, options);
    await entered;
    // While the first run holds the lock: a run with a short lockTimeoutMs gives up.
    const timedOut = await migrateToLatest(other, { ...options, lockTimeoutMs: 300 }).catch((e: unknown) => e);
    expect(timedOut).toBeInstanceOf(MigrationLockTimeoutError);
    expect(timedOut).toMatchObject({ code: 'MIGRATION_LOCK_TIMEOUT' });
    // A patient one says it waits; the first run ends only after that.
    const events: string[] = [];
    const second = migrateToLatest(other, {
      ...options,
      onEvent: (event) => {
        events.push(event.kind);
        if (event.kind === 'lock-wait') release();
      },
    });
    const [a, b] = await Promise.all([first, second]);
    expect(a.results).toMatchObject([{ name: `001_${prefix}_slow`, status: 'applied' }]);
    expect(b.results).toEqual([]);
    expect(events).toEqual(['lock-wait']);
    expect(runs).toBe(1);
  });

  test('an aborted run names its migration and still releases the lock: the next run gets it at once', async () => {
    const { database, url, prefix } = await setup();
    const other = connect<unknown>(url, { pool: { max: 2 }, ...backend.connectOptions });
    cleanups.push(() => other.close());
    let inside!: () => void;
    const entered = new Promise<void>((resolve) => (inside = resolve));
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const name = `001_${prefix}_aborted`;
    const options = {
      provider: {
        getMigrations: async () => ({
          [name]: {
            up: async (db: AnyDb) => {
              inside();
              await gate;
              await createTable(`${prefix}_aborted`)(db);
            },
          },
        }),
      },
      migrationTableName: `${prefix}_migration`,
      migrationLockTableName: `${prefix}_migration_lock`,
    };
    const controller = new AbortController();
    const first = migrateToLatest(database, { ...options, signal: controller.signal }).catch((e: unknown) => e);
    await entered;
    // The deploy is cancelled while its migration runs: its next statement is refused.
    controller.abort(new Error('deploy cancelled'));
    release();
    const error = await first;
    expect(error).toBeInstanceOf(MigrationError);
    expect(error).toMatchObject({ code: 'MIGRATION_FAILED', migrationName: name });
    // The lock went with the run, not with its connection: a patient-but-not-forever run gets it.
    const next = await migrateToLatest(other, { ...options, lockTimeoutMs: 5_000 });
    expect(next.results).toMatchObject([{ name, status: 'applied' }]);
  });

  test('the CLI: latest, status, down print each migration; a failing one exits non-zero naming it', async () => {
    const { database, url, prefix, folder } = await setup();
    const cliUrl = backend.urlWithPassword?.(url) ?? url;
    const flags = ['--url', cliUrl, '--folder', folder, '--table', `${prefix}_migration`];
    const [a, b, bad] = [`001_${prefix}_a`, `002_${prefix}_b`, `003_${prefix}_bad`];
    await writeMigrations(folder, {
      [a]: migrationFile(`await db.schema.createTable('${prefix}_a').addColumn('id', 'integer').execute();`, `await db.schema.dropTable('${prefix}_a').execute();`),
      [b]: migrationFile(`await db.schema.createTable('${prefix}_b').addColumn('id', 'integer').execute();`, `await db.schema.dropTable('${prefix}_b').execute();`),
    });
    const latest = await runNode([CLI, 'migrate', 'latest', ...flags]);
    expect(latest.stderr).toBe('');
    expect(latest.code).toBe(0);
    expect(latest.stdout).toMatch(new RegExp(`up +${a} \\(\\d+ ms\\)`));
    expect(latest.stdout).toMatch(new RegExp(`up +${b} \\(\\d+ ms\\)`));
    expect(latest.stdout).toContain('Applied 2 migrations');

    const status = await runNode([CLI, 'migrate', 'status', ...flags]);
    expect(status.code).toBe(0);
    expect(status.stdout).toContain('2 applied, 0 pending.');

    const down = await runNode([CLI, 'migrate', 'down', ...flags]);
    expect(down.code).toBe(0);
    expect(down.stdout).toMatch(new RegExp(`down ${b} \\(\\d+ ms\\)`));
    expect(down.stdout).toContain('Reverted 1 migration');
    expect((await tablesWith(database, prefix)).filter((n) => !n.includes('migration'))).toEqual([`${prefix}_a`]);

    await writeMigrations(folder, {
      [bad]: migrationFile(
        `await db.schema.createTable('${prefix}_bad').addColumn('id', 'integer').execute();
  await sql\`SELECT * FROM ${prefix}_no_such_table\`.execute(db);`,
      ),
    });
    const failed = await runNode([CLI, 'migrate', 'latest', ...flags]);
    expect(failed.code).toBe(1);
    expect(failed.stderr).toContain(`Migration ${bad} failed (up)`);
    expect(failed.stdout).toMatch(new RegExp(`FAIL ${bad}`));
    const left = (await tablesWith(database, prefix)).filter((n) => !n.includes('migration'));
    // b (re-applied in the same run) and bad roll back together, or stay on MySQL.
    expect(left).toEqual(backend.transactionalDdl ? [`${prefix}_a`] : [`${prefix}_a`, `${prefix}_b`, `${prefix}_bad`]);
    for (const run of [latest, status, down, failed]) expect(run.stdout + run.stderr).not.toContain('hunter2');
  });

  test('two deploys at once: `sluice migrate latest` in two processes applies the migration exactly once', async () => {
    const { database, url, prefix, folder } = await setup();
    await sql`CREATE TABLE ${sql.table(`${prefix}_runs`)} (n integer)`.execute(database.db);
    const started = path.join(folder, 'started');
    const release = path.join(folder, 'release');
    const name = `001_${prefix}_slow`;
    await writeMigrations(folder, {
      [name]: migrationFile(
        `await sql\`INSERT INTO ${prefix}_runs (n) VALUES (1)\`.execute(db);
  writeFileSync(${JSON.stringify(started)}, String(process.pid));
  // Holds the lock until the test has seen the other process wait for it.
  const until = Date.now() + 12_000;
  while (!existsSync(${JSON.stringify(release)}) && Date.now() < until) await new Promise((r) => setTimeout(r, 25));`,
      ),
    });
    const flags = ['--url', url, '--folder', folder, '--table', `${prefix}_migration`];
    const deploys = [startNode([CLI, 'migrate', 'latest', ...flags]), startNode([CLI, 'migrate', 'latest', ...flags])];
    await expect
      .poll(() => existsSync(started) && deploys.some((d) => d.output().stdout.includes('Waiting for the migration lock')), { timeout: 12_000, interval: 50 })
      .toBe(true);
    await writeFile(release, '');
    const outcomes = await Promise.all(deploys.map((d) => d.exited));
    expect(outcomes.map((o) => [o.code, o.stderr])).toEqual([
      [0, ''],
      [0, ''],
    ]);
    const appliers = outcomes.filter((o) => new RegExp(`up +${name}`).test(o.stdout));
    const waiters = outcomes.filter((o) => o.stdout.includes('Waiting for the migration lock') && o.stdout.includes('Nothing to do'));
    expect([appliers.length, waiters.length]).toEqual([1, 1]);
    const { rows } = await sql<{ n: number | string }>`SELECT count(*) AS n FROM ${sql.table(`${prefix}_runs`)}`.execute(database.db);
    expect(Number(rows[0]?.n)).toBe(1);
  });
}
