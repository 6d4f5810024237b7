import {
  type DatabaseIntrospector,
  type Dialect,
  type DialectAdapter,
  type Driver as KyselyDriver,
  type Kysely,
  MysqlIntrospector,
  MysqlQueryCompiler,
  PostgresIntrospector,
  PostgresQueryCompiler,
  type QueryCompiler,
  SqliteIntrospector,
  SqliteQueryCompiler,
} from 'kysely';
import type { Driver } from '../drivers/driver.js';
import type { PoolKyselyDriver } from './kysely-driver.js';
// Kysely's adapters, with a migration lock that holds across processes (see migration-lock.ts).
import { MysqlMigrationAdapter, PostgresMigrationAdapter, SqliteMigrationAdapter } from './migrate/migration-lock.js';

/**
 * Kysely's SQLite adapter, told that this SQLite has several connections: Kysely 0.29
 * serialises connections when an adapter says it has one (true of a single
 * better-sqlite3 handle), which would queue sluice's parallel readers behind a
 * transaction, and deadlock a read through `db` inside one. (0.28 does not ask.)
 */
class SqliteWorkersAdapter extends SqliteMigrationAdapter {
  get supportsMultipleConnections(): boolean {
    return true;
  }
}

/**
 * A Kysely dialect whose connections come from a sluice pool: SQL is compiled by Kysely's
 * own PostgreSQL, MySQL or SQLite compiler, and every query gets sluice's deadlines.
 */
export class SluiceDialect implements Dialect {
  readonly #driver: Driver;
  readonly #kyselyDriver: PoolKyselyDriver;

  /** `kyselyDriver`: the one driver of the Kysely instance, made by connect(), which also pins transactions on it. */
  constructor(driver: Driver, kyselyDriver: PoolKyselyDriver) {
    this.#driver = driver;
    this.#kyselyDriver = kyselyDriver;
  }

  createDriver(): KyselyDriver {
    return this.#kyselyDriver;
  }

  createQueryCompiler(): QueryCompiler {
    switch (this.#driver.dialect) {
      case 'mysql':
        return new MysqlQueryCompiler();
      case 'sqlite':
        return new SqliteQueryCompiler();
      default:
        return new PostgresQueryCompiler();
    }
  }

  createAdapter(): DialectAdapter {
    switch (this.#driver.dialect) {
      case 'mysql':
        return new MysqlMigrationAdapter();
      case 'sqlite':
        return new SqliteWorkersAdapter();
      default:
        return new PostgresMigrationAdapter();
    }
  }

  // Kysely's own signature takes Kysely<any>.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  createIntrospector(db: Kysely<any>): DatabaseIntrospector {
    switch (this.#driver.dialect) {
      case 'mysql':
        return new MysqlIntrospector(db);
      case 'sqlite':
        return new SqliteIntrospector(db);
      default:
        return new PostgresIntrospector(db);
    }
  }
}
