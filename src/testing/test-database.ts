/**
 * Isolation per test file: a database of the file's own, made from the run's template
 * (PostgreSQL: CREATE DATABASE ... TEMPLATE; MySQL: a fresh schema with the template's
 * tables; SQLite: a copy of the template file), dropped when the file is done.
 */
import { connect, type ConnectOptions, type Database } from '../orm/connect.js';
import { cloneMysql, dropMysqlDatabase } from './mysql-template.js';
import { clonePostgres, dropPostgresDatabase } from './postgres-template.js';
import { cloneSqlite, dropSqliteDatabase } from './sqlite-template.js';
import type { Template } from './test-run.js';

export interface TestDatabase<DB> {
  readonly dialect: Template['dialect'];
  /** The database, migrated (and seeded) as the template was. */
  readonly database: Database<DB>;
  /** Its URL, for code under test that connects by itself (a child process). May hold a password: never print it. */
  readonly url: string;
  /** Closes `database` and drops the database. */
  drop(): Promise<void>;
}

export interface TestDatabaseOptions extends ConnectOptions {
  /**
   * A database with nothing in it instead of the template's copy: for a test that runs
   * migrations of its own (their table would disagree with the template's). Default false.
   */
  readonly empty?: boolean;
}

/** Makes a new database from `template` and connects to it (lazily: no connection opens before the first query). */
export async function createTestDatabase<DB>(template: Template, options: TestDatabaseOptions = {}): Promise<TestDatabase<DB>> {
  const { empty = false, ...connectOptions } = options;
  const made =
    template.dialect === 'postgres'
      ? await clonePostgres(template, empty)
      : template.dialect === 'mysql'
        ? await cloneMysql(template, empty)
        : await cloneSqlite(template, empty);
  const database = connect<DB>(made.url, connectOptions);
  let dropped: Promise<void> | undefined;
  return {
    dialect: template.dialect,
    database,
    url: made.url,
    drop() {
      dropped ??= (async () => {
        await database.close();
        if (template.dialect === 'postgres') await dropPostgresDatabase(template.serverUrl, made.name);
        else if (template.dialect === 'mysql') await dropMysqlDatabase(template.serverUrl, made.name);
        else await dropSqliteDatabase(made.name);
      })();
      return dropped;
    },
  };
}
