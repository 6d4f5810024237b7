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
import type { Driver, DriverConnection } from '../drivers/driver.js';
import type { Pool } from '../pool/index.js';
import { PoolKyselyDriver } from './kysely-driver.js';
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
  readonly #pool: Pool<DriverConnection>;
  readonly #driver: Driver;
  readonly #statementTimeoutMs: number;

  /** `statementTimeoutMs`: the deadline of a statement run outside any `withDeadline` scope. */
  constructor(pool: Pool<DriverConnection>, driver: Driver, statementTimeoutMs = Infinity) {
    this.#pool = pool;
    this.#driver = driver;
    this.#statementTimeoutMs = statementTimeoutMs;
  }

  createDriver(): KyselyDriver {
    return new PoolKyselyDriver(this.#pool, this.#driver, this.#statementTimeoutMs);
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
