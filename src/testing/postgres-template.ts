/**
 * PostgreSQL test databases: the run's migrations are applied once, to a template database;
 * each test file gets `CREATE DATABASE ... TEMPLATE`, a copy of the template's files (tens
 * of milliseconds) whose cost does not grow with the number of migrations.
 */
import { sql } from 'kysely';
import { DatabaseError } from '../drivers/errors.js';
import type { Database } from '../orm/connect.js';
import { TestDatabaseError } from './errors.js';
import { fileDatabaseName, isStale, templateName, urlOfDatabase } from './names.js';
import { withDatabase } from './with-database.js';

export interface PostgresTemplate {
  readonly dialect: 'postgres';
  /** The server's URL (the database it names is used to create and drop the others). */
  readonly serverUrl: string;
  readonly runId: string;
  readonly name: string;
}

function createFailed(error: unknown): never {
  if (error instanceof DatabaseError && error.sqlState === '42501') {
    throw new TestDatabaseError(
      'The PostgreSQL user of the tests cannot create databases: grant it CREATEDB (ALTER ROLE ... CREATEDB), or use a superuser for tests.',
      { cause: error },
    );
  }
  throw error;
}

/** Creates the run's template: an empty database, `prepare` run on it (migrations, seed), then locked as a template. */
export async function preparePostgresTemplate(
  serverUrl: string,
  runId: string,
  prepare: (url: string) => Promise<void>,
): Promise<PostgresTemplate> {
  const name = templateName(runId);
  await withDatabase(serverUrl, (admin) => sql`CREATE DATABASE ${sql.id(name)}`.execute(admin.db)).catch(createFailed);
  await prepare(urlOfDatabase(serverUrl, name));
  // No connection may be open on a template while it is copied: none can be, from now on.
  await withDatabase(serverUrl, (admin) => sql`ALTER DATABASE ${sql.id(name)} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false`.execute(admin.db));
  return { dialect: 'postgres', serverUrl, runId, name };
}

/** A new database for one test file, copied from the template (or `empty`: the server's default, template1). */
export async function clonePostgres(template: PostgresTemplate, empty = false): Promise<{ readonly name: string; readonly url: string }> {
  const name = fileDatabaseName(template.runId);
  await withDatabase(template.serverUrl, (admin) =>
    (empty ? sql`CREATE DATABASE ${sql.id(name)}` : sql`CREATE DATABASE ${sql.id(name)} TEMPLATE ${sql.id(template.name)}`).execute(admin.db),
  ).catch(createFailed);
  return { name, url: urlOfDatabase(template.serverUrl, name) };
}

/** Drops one database, closing any connection still open on it. */
export async function dropPostgresDatabase(serverUrl: string, name: string): Promise<void> {
  await withDatabase(serverUrl, (admin) => dropDatabase(admin, name));
}

async function dropDatabase(admin: Database<unknown>, name: string): Promise<void> {
  // A template cannot be dropped until it is a template no more.
  await sql`ALTER DATABASE ${sql.id(name)} WITH IS_TEMPLATE false`.execute(admin.db).catch(() => {});
  // WITH (FORCE): PostgreSQL 13 or newer.
  await sql`DROP DATABASE IF EXISTS ${sql.id(name)} WITH (FORCE)`.execute(admin.db);
}

/**
 * Drops the run's databases (its template, and any test file's left behind), then, as far
 * as it can, other runs' older than a day: one it may not drop (another user's) stays.
 */
export async function dropPostgresRun(serverUrl: string, runId: string): Promise<void> {
  await withDatabase(serverUrl, async (admin) => {
    const { rows } = await sql<{ datname: string }>`SELECT datname FROM pg_database WHERE datname LIKE 'sluice\\_t%'`.execute(admin.db);
    for (const { datname } of rows) if (datname.startsWith(`${runId}_`)) await dropDatabase(admin, datname);
    for (const { datname } of rows) if (isStale(datname)) await dropDatabase(admin, datname).catch(() => {});
  });
}
