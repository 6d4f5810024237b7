import {
  type DatabaseIntrospector,
  type Dialect,
  type DialectAdapter,
  type Driver as KyselyDriver,
  type Kysely,
  MysqlAdapter,
  MysqlIntrospector,
  MysqlQueryCompiler,
  PostgresAdapter,
  PostgresIntrospector,
  PostgresQueryCompiler,
  type QueryCompiler,
  SqliteAdapter,
  SqliteIntrospector,
  SqliteQueryCompiler,
} from 'kysely';
import type { Driver, DriverConnection } from '../drivers/driver.js';
import type { Pool } from '../pool/index.js';
import { PoolKyselyDriver } from './kysely-driver.js';

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
        return new MysqlAdapter();
      case 'sqlite':
        return new SqliteAdapter();
      default:
        return new PostgresAdapter();
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
