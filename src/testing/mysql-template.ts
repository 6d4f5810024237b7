/**
 * MySQL/MariaDB test databases. MySQL has no template databases: the run's migrations are
 * applied once, to a template schema, whose tables are read once (their `SHOW CREATE
 * TABLE`, and which hold rows); each test file gets a fresh schema made from that: the
 * same CREATE TABLE statements, foreign keys and AUTO_INCREMENT counters included, and the
 * template's rows (the migration table's among them) copied with INSERT ... SELECT.
 */
import { sql } from 'kysely';
import { DatabaseError } from '../drivers/errors.js';
import { currentKysely, type Database } from '../orm/connect.js';
import { TestDatabaseError } from './errors.js';
import { fileDatabaseName, isStale, templateName, urlOfDatabase } from './names.js';
import { withDatabase } from './with-database.js';

export interface MysqlTable {
  readonly name: string;
  /** Its `SHOW CREATE TABLE`: references to tables of the same schema are unqualified. */
  readonly createSql: string;
  /**
   * The columns to copy rows through (generated ones are computed, not copied; a column
   * with an expression default, which MySQL 8 marks DEFAULT_GENERATED, is copied); empty
   * when it has no rows.
   */
  readonly copyColumns: readonly string[];
}

export interface MysqlTemplate {
  readonly dialect: 'mysql';
  readonly serverUrl: string;
  readonly runId: string;
  readonly name: string;
  readonly tables: readonly MysqlTable[];
}

function createFailed(error: unknown): never {
  if (error instanceof DatabaseError && (error.errno === 1044 || error.errno === 1142 || error.errno === 1227)) {
    throw new TestDatabaseError(
      'The MySQL user of the tests cannot create databases: GRANT it CREATE and DROP on sluice\\_t% (or *), or use root for tests.',
      { cause: error },
    );
  }
  throw error;
}

/** What a template schema holds besides tables, which a copy table by table would lose. */
async function uncopyable(database: Database<unknown>, schema: string): Promise<string[]> {
  const { rows } = await sql<{ kind: string; name: string }>`
    SELECT LOWER(table_type) AS kind, table_name AS name FROM information_schema.tables
      WHERE table_schema = ${schema} AND table_type NOT IN ('BASE TABLE', 'SYSTEM VERSIONED')
    UNION ALL SELECT 'trigger', trigger_name FROM information_schema.triggers WHERE trigger_schema = ${schema}
    UNION ALL SELECT LOWER(routine_type), routine_name FROM information_schema.routines WHERE routine_schema = ${schema}
    UNION ALL SELECT 'event', event_name FROM information_schema.events WHERE event_schema = ${schema}`.execute(database.db);
  return rows.map((row) => `${row.kind} ${row.name}`);
}

/** Creates the run's template schema, runs `prepare` on it (migrations, seed), and reads its tables. */
export async function prepareMysqlTemplate(serverUrl: string, runId: string, prepare: (url: string) => Promise<void>): Promise<MysqlTemplate> {
  const name = templateName(runId);
  await withDatabase(serverUrl, (admin) => sql`CREATE DATABASE ${sql.id(name)}`.execute(admin.db)).catch(createFailed);
  const url = urlOfDatabase(serverUrl, name);
  await prepare(url);
  const tables = await withDatabase(url, async (database) => {
    const others = await uncopyable(database, name);
    if (others.length > 0) {
      throw new TestDatabaseError(
        `The MySQL test schema holds ${others.join(', ')}: sluice/testing copies MySQL schemas table by table, and cannot copy these yet. ` +
          'Create them in a test file of its own, or test them on PostgreSQL.',
      );
    }
    const { rows } = await sql<{ name: string }>`
      SELECT table_name AS name FROM information_schema.tables
      WHERE table_schema = ${name} AND table_type IN ('BASE TABLE', 'SYSTEM VERSIONED') ORDER BY table_name`.execute(database.db);
    const read: MysqlTable[] = [];
    for (const { name: table } of rows) {
      const shown = await sql<Record<string, string>>`SHOW CREATE TABLE ${sql.id(table)}`.execute(database.db);
      const createSql = shown.rows[0]?.['Create Table'];
      if (createSql === undefined) throw new TestDatabaseError(`SHOW CREATE TABLE ${table} answered nothing.`);
      const hasRows = await sql<{ found: number }>`SELECT EXISTS (SELECT 1 FROM ${sql.id(table)}) AS found`.execute(database.db);
      let copyColumns: string[] = [];
      if (Number(hasRows.rows[0]?.found) === 1) {
        const columns = await sql<{ name: string }>`
          SELECT column_name AS name FROM information_schema.columns
          WHERE table_schema = ${name} AND table_name = ${table} AND COALESCE(generation_expression, '') = ''
          ORDER BY ordinal_position`.execute(database.db);
        copyColumns = columns.rows.map((column) => column.name);
      }
      read.push({ name: table, createSql, copyColumns });
    }
    return read;
  });
  return { dialect: 'mysql', serverUrl, runId, name, tables };
}

/** A new schema for one test file, made from the template (or `empty`). Returns its URL. */
export async function cloneMysql(template: MysqlTemplate, empty = false): Promise<{ readonly name: string; readonly url: string }> {
  const name = fileDatabaseName(template.runId);
  await withDatabase(template.serverUrl, (admin) => sql`CREATE DATABASE ${sql.id(name)}`.execute(admin.db)).catch(createFailed);
  const url = urlOfDatabase(template.serverUrl, name);
  if (empty) return { name, url };
  try {
    await withDatabase(url, (database) =>
      database.withConnection(async () => {
        // The scope's own connection: FOREIGN_KEY_CHECKS is a session setting.
        const db = currentKysely(database.db);
        // Tables in any order: a foreign key may name a table not created yet.
        await sql`SET FOREIGN_KEY_CHECKS = 0`.execute(db);
        for (const table of template.tables) await sql.raw(table.createSql).execute(db);
        for (const table of template.tables) {
          if (table.copyColumns.length === 0) continue;
          const columns = sql.join(table.copyColumns.map((column) => sql.id(column)));
          await sql`INSERT INTO ${sql.id(table.name)} (${columns}) SELECT ${columns} FROM ${sql.id(template.name, table.name)}`.execute(db);
        }
        await sql`SET FOREIGN_KEY_CHECKS = 1`.execute(db);
      }),
    );
  } catch (error) {
    await dropMysqlDatabase(template.serverUrl, name).catch(() => {});
    throw error;
  }
  return { name, url };
}

export async function dropMysqlDatabase(serverUrl: string, name: string): Promise<void> {
  await withDatabase(serverUrl, (admin) => sql`DROP DATABASE IF EXISTS ${sql.id(name)}`.execute(admin.db));
}

/**
 * Drops the run's schemas (its template, and any test file's left behind), then, as far as
 * it can, other runs' older than a day.
 */
export async function dropMysqlRun(serverUrl: string, runId: string): Promise<void> {
  await withDatabase(serverUrl, async (admin) => {
    const { rows } = await sql<{ name: string }>`
      SELECT schema_name AS name FROM information_schema.schemata WHERE schema_name LIKE 'sluice\\_t%'`.execute(admin.db);
    const drop = (name: string) => sql`DROP DATABASE IF EXISTS ${sql.id(name)}`.execute(admin.db);
    for (const { name } of rows) if (name.startsWith(`${runId}_`)) await drop(name);
    for (const { name } of rows) if (isStale(name)) await drop(name).catch(() => {});
  });
}
