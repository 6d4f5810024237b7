/**
 * sluice/testing's parts, called directly (as a runner other than vitest would): finding a
 * server, a run's templates and the databases made from them, what a run leaves behind (nothing),
 * and a test transaction's edges. Real servers; a closed port for one that is missing.
 */
import { type Generated, type Kysely, sql } from 'kysely';
import { connect, ConnectionLostError, currentKysely, ForeignKeyViolationError, PoolTimeoutError, type Database } from 'sluice';
import {
  beginTestTransaction,
  createTestDatabase,
  findServer,
  NoTestServerError,
  startTestRun,
  TestDatabaseError,
  TestIsolationError,
  type TestRun,
} from 'sluice/testing';
import { testServerUrl } from 'sluice/testing/vitest';
import { describe, expect, test } from 'vitest';

const postgres = testServerUrl('postgres');
const mysql = testServerUrl('mysql');
const redis = testServerUrl('redis');

// Migrations type against no schema in particular.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyDb = Kysely<any>;

interface ShopDB {
  customers: { id: number; name: string };
  orders: { id: Generated<number>; customer_id: number; quantity: number; price: number; total?: number };
}

/** customers 1-n orders, with a foreign key, an auto-increment key, and (MySQL) a generated column. */
const shopMigrations = (backend: string) => ({
  provider: {
    getMigrations: async () => ({
      '001_shop': {
        up: async (db: AnyDb) => {
          await db.schema.createTable('customers').addColumn('id', 'integer', (c) => c.primaryKey()).addColumn('name', 'varchar(50)', (c) => c.notNull()).execute();
          const id =
            backend === 'postgres'
              ? (t: ReturnType<AnyDb['schema']['createTable']>) => t.addColumn('id', 'integer', (c) => c.primaryKey().generatedByDefaultAsIdentity())
              : (t: ReturnType<AnyDb['schema']['createTable']>) => t.addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement());
          let orders = id(db.schema.createTable('orders'))
            .addColumn('customer_id', 'integer', (c) => c.notNull().references('customers.id'))
            .addColumn('quantity', 'integer', (c) => c.notNull())
            .addColumn('price', 'integer', (c) => c.notNull());
          if (backend === 'mysql') orders = orders.addColumn('total', sql`integer GENERATED ALWAYS AS (quantity * price) STORED`);
          await orders.execute();
        },
      },
    }),
  },
});

async function seedShop(database: Database<ShopDB>): Promise<void> {
  await database.db.insertInto('customers').values([{ id: 1, name: 'Ada' }, { id: 2, name: 'Grace' }]).execute();
  await database.db.insertInto('orders').values([{ customer_id: 1, quantity: 2, price: 5 }, { customer_id: 2, quantity: 1, price: 7 }]).execute();
}

const databasesOnServer = async (backend: 'postgres' | 'mysql', prefix: string): Promise<string[]> => {
  const admin = connect<unknown>(testServerUrl(backend)!, { pool: { max: 1 } });
  try {
    const like = `${prefix.replaceAll('_', '\\_')}%`;
    const { rows } =
      backend === 'postgres'
        ? await sql<{ name: string }>`SELECT datname AS name FROM pg_database WHERE datname LIKE ${like}`.execute(admin.db)
        : await sql<{ name: string }>`SELECT schema_name AS name FROM information_schema.schemata WHERE schema_name LIKE ${like}`.execute(admin.db);
    return rows.map((row) => row.name);
  } finally {
    await admin.close();
  }
};

describe('finding a server', () => {
  test.skipIf(postgres === undefined || mysql === undefined || redis === undefined)('the environment variable first, else the local server; each labelled without its password', async () => {
    const withPassword = new URL(postgres!);
    withPassword.password = 'do-not-print-me';
    const fromEnv = await findServer('postgres', { env: { SLUICE_PG_URL: withPassword.toString() } });
    expect(fromEnv).toMatchObject({ source: 'env', url: withPassword.toString() });
    expect(fromEnv.label).toMatch(/^PostgreSQL .+ \(from SLUICE_PG_URL\)$/);
    expect(fromEnv.label).not.toContain('do-not-print-me');

    const local = await findServer('mysql', { env: {}, settings: { local: mysql! } });
    expect(local).toMatchObject({ source: 'local', url: mysql });
    expect(local.label).toMatch(/^MySQL\/MariaDB .+ \(local server\)$/);

    // Redis answers PING in its own protocol.
    expect(await findServer('redis', { env: {}, settings: { local: redis! } })).toMatchObject({ source: 'local' });
  });

  test('nothing anywhere: a NoTestServerError whose one-line message gives every reason, and no password', async () => {
    const error = await findServer('postgres', {
      env: {},
      settings: { local: 'postgres://postgres:do-not-print-me@127.0.0.1:1/test', image: false },
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(NoTestServerError);
    expect(error).toMatchObject({ code: 'NO_TEST_SERVER', backend: 'postgres' });
    const message = (error as Error).message;
    expect(message).not.toContain('\n');
    expect(message).toMatch(/SLUICE_PG_URL is not set; nothing usable at 127\.0\.0\.1:1\/test \(ECONNREFUSED\)/);
    expect(message).not.toContain('do-not-print-me');
  });

  test('a variable naming a server that does not answer is an error, not a reason to test elsewhere', async () => {
    const error = await findServer('mysql', { env: { SLUICE_MYSQL_URL: 'mysql://root:do-not-print-me@127.0.0.1:1/test' } }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(NoTestServerError);
    expect((error as Error).message).toMatch(/SLUICE_MYSQL_URL is set, but MySQL\/MariaDB at 127\.0\.0\.1:1\/test does not answer \(ECONNREFUSED\)/);
    expect((error as Error).message).not.toContain('do-not-print-me');
  });

  test.skipIf(redis === undefined)('something else on the port (Redis where PostgreSQL was expected) is not taken for the server', async () => {
    const port = new URL(redis!).port || '6379';
    const error = await findServer('postgres', { env: {}, settings: { local: `postgres://postgres@127.0.0.1:${port}/test`, image: false }, probeTimeoutMs: 1_000 }).catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(NoTestServerError);
    expect((error as NoTestServerError).reasons[1]).toMatch(/^nothing usable at 127\.0\.0\.1:\d+\/test \(.+\)$/);
  });
});

for (const backend of ['postgres', 'mysql', 'sqlite'] as const) {
  const skip = backend !== 'sqlite' && testServerUrl(backend) === undefined;

  describe.skipIf(skip)(`a run's template on ${backend}`, () => {
    test('migrated and seeded once; each database made from it has the schema, the rows, the keys and the counters', async () => {
      const run = await startTestRun<ShopDB>({ backends: [backend], migrations: shopMigrations, seed: seedShop, log: () => {} });
      try {
        const template = run.plan.backends[backend];
        if (template?.available !== true || template.template === undefined) throw new Error(`no template for ${backend}`);
        // Four at once, as parallel test files would.
        const made = await Promise.all([1, 2, 3, 4].map(() => createTestDatabase<ShopDB>(template.template!)));
        try {
          expect(new Set(made.map((one) => one.url)).size).toBe(4);
          for (const [i, { database }] of made.entries()) {
            const db = database.db;
            expect(await db.selectFrom('customers').select('name').orderBy('id').execute()).toEqual([{ name: 'Ada' }, { name: 'Grace' }]);
            // The auto-increment counter goes on from the template's rows.
            await db.insertInto('orders').values({ customer_id: 1, quantity: i + 1, price: 10 }).execute();
            const ids = await db.selectFrom('orders').select('id').orderBy('id').execute();
            expect(ids.map((row) => Number(row.id))).toEqual([1, 2, 3]);
            // The foreign key came along.
            await expect(db.insertInto('orders').values({ customer_id: 99, quantity: 1, price: 1 }).execute()).rejects.toBeInstanceOf(ForeignKeyViolationError);
            if (backend === 'mysql') {
              const totals = await db.selectFrom('orders').select('total').orderBy('id').execute();
              expect(totals.map((row) => row.total)).toEqual([10, 7, (i + 1) * 10]);
            }
            // Migrations already applied: the migration table came with the schema.
            const { rows } = await sql<{ name: string }>`SELECT name FROM kysely_migration`.execute(db);
            expect(rows).toEqual([{ name: '001_shop' }]);
          }
          // An empty one has nothing.
          const empty = await createTestDatabase<ShopDB>(template.template, { empty: true });
          try {
            const tables = await empty.database.db.introspection.getTables({ withInternalKyselyTables: true });
            expect(tables).toEqual([]);
          } finally {
            await empty.drop();
          }
        } finally {
          await Promise.all(made.map((one) => one.drop()));
        }
      } finally {
        await run.teardown();
      }
      if (backend !== 'sqlite') expect(await databasesOnServer(backend, run.plan.runId)).toEqual([]);
    });

    if (backend !== 'sqlite') {
      test("teardown drops the run's databases, even one a test file left, and other runs' older than a day", async () => {
        const stale = `sluice_t${(Date.now() - 25 * 3_600_000).toString(36).padStart(9, '0')}beef_0badc0de`;
        const recent = `sluice_t${(Date.now() - 3_600_000).toString(36).padStart(9, '0')}beef_0badc0de`;
        const admin = connect<unknown>(testServerUrl(backend)!, { pool: { max: 1 } });
        let run: TestRun | undefined;
        try {
          for (const name of [stale, recent]) await sql`CREATE DATABASE ${sql.id(name)}`.execute(admin.db);
          run = await startTestRun({ backends: [backend], migrations: shopMigrations, log: () => {} });
          const plan = run.plan.backends[backend];
          if (plan?.available !== true) throw new Error('no plan');
          await createTestDatabase(plan.template!); // never dropped: a test file that crashed
          expect(await databasesOnServer(backend, run.plan.runId)).toHaveLength(2);
          await run.teardown();
          expect(await databasesOnServer(backend, run.plan.runId)).toEqual([]);
          // Another run's, from an hour ago, may still be running: it stays.
          expect(await databasesOnServer(backend, 'sluice_t')).not.toContain(stale);
          expect(await databasesOnServer(backend, 'sluice_t')).toContain(recent);
        } finally {
          await sql`DROP DATABASE IF EXISTS ${sql.id(recent)}`.execute(admin.db);
          await sql`DROP DATABASE IF EXISTS ${sql.id(stale)}`.execute(admin.db);
          await admin.close();
        }
      });
    }
  });
}

describe.skipIf(mysql === undefined)('MySQL templates', () => {
  test('a view (which a table-by-table copy would lose) is refused with a clear TestDatabaseError, and the run leaves nothing', async () => {
    const before = await databasesOnServer('mysql', 'sluice_t');
    const error = await startTestRun({
      backends: ['mysql'],
      migrations: {
        provider: {
          getMigrations: async () => ({
            '001': {
              up: async (db: AnyDb) => {
                await db.schema.createTable('t').addColumn('id', 'integer').execute();
                await sql`CREATE VIEW v AS SELECT id FROM t`.execute(db);
              },
            },
          }),
        },
      },
      log: () => {},
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(TestDatabaseError);
    expect((error as Error).message).toMatch(/holds view v: sluice\/testing copies MySQL schemas table by table/);
    expect(await databasesOnServer('mysql', 'sluice_t')).toEqual(before);
  });
});

describe.skipIf(postgres === undefined || mysql === undefined)('test transactions at their edges', () => {
  async function withShop<T>(backend: 'postgres' | 'mysql', work: (database: Database<ShopDB>) => Promise<T>, pool = {}): Promise<T> {
    const run = await startTestRun<ShopDB>({ backends: [backend], migrations: shopMigrations, log: () => {} });
    try {
      const plan = run.plan.backends[backend];
      if (plan?.available !== true) throw new Error('no plan');
      const made = await createTestDatabase<ShopDB>(plan.template!, { pool: { max: 3, ...pool } });
      try {
        return await work(made.database);
      } finally {
        await made.drop();
      }
    } finally {
      await run.teardown();
    }
  }

  test('MySQL commits a transaction at DDL: rolling the test back then fails with TEST_NOT_ISOLATED instead of passing quietly', async () => {
    await withShop('mysql', async (database) => {
      const transaction = await beginTestTransaction(database);
      await database.db.insertInto('customers').values({ id: 1, name: 'Kept by the commit' }).execute();
      await sql`CREATE TABLE more_things (id int)`.execute(database.db);
      const error = await transaction.rollback().catch((e: unknown) => e);
      expect(error).toBeInstanceOf(TestIsolationError);
      expect(error).toMatchObject({ code: 'TEST_NOT_ISOLATED' });
      expect((error as Error).message).toMatch(/MySQL committed it during the test/);
      expect(await database.db.selectFrom('customers').select('name').execute()).toEqual([{ name: 'Kept by the commit' }]);
    });
  });

  test('MySQL: DDL inside a transaction of the code commits the test too: TEST_NOT_ISOLATED, not a pass', async () => {
    await withShop('mysql', async (database) => {
      const transaction = await beginTestTransaction(database);
      await database.db.insertInto('customers').values({ id: 1, name: 'Committed by the DDL' }).execute();
      await expect(
        database.transaction(async (trx) => {
          await sql`CREATE TABLE made_in_a_transaction (id int)`.execute(trx);
          throw new Error('and then it fails');
        }),
      ).rejects.toThrow('and then it fails');
      await expect(transaction.rollback()).rejects.toBeInstanceOf(TestIsolationError);
      expect(await database.db.selectFrom('customers').select('name').execute()).toEqual([{ name: 'Committed by the DDL' }]);
    });
  });

  test('one test transaction at a time on a database, even two asked for at once; after it, queries go to the pool again', async () => {
    await withShop('postgres', async (database) => {
      const both = await Promise.allSettled([beginTestTransaction(database), beginTestTransaction(database)]);
      expect(both.map((outcome) => outcome.status).sort()).toEqual(['fulfilled', 'rejected']);
      const refused = both.find((outcome) => outcome.status === 'rejected') as PromiseRejectedResult;
      expect(refused.reason).toMatchObject({ code: 'TEST_TRANSACTION_OPEN' });
      const first = (both.find((outcome) => outcome.status === 'fulfilled') as PromiseFulfilledResult<Awaited<ReturnType<typeof beginTestTransaction>>>).value;
      await expect(beginTestTransaction(database)).rejects.toMatchObject({ code: 'TEST_TRANSACTION_OPEN' });
      expect(database.stats().inUse).toBe(1);
      await first.rollback();
      expect(database.stats().inUse).toBe(0);
      // A query made while a scope holds a connection gets a second one (in the test
      // transaction it would have waited for the scope).
      await database.withConnection(async () => {
        await database.db.selectFrom('customers').selectAll().execute();
        expect(database.stats().inUse).toBe(1);
      });
      expect(database.stats().size).toBe(2);
    });
  });

  test('a caller that waits for its own transaction (a query on db inside a plain Kysely transaction) fails at the acquire timeout, saying why', async () => {
    await withShop(
      'postgres',
      async (database) => {
        const transaction = await beginTestTransaction(database);
        try {
          const error = await database.db
            .transaction()
            .execute(async (trx) => {
              await trx.insertInto('customers').values({ id: 1, name: 'Ada' }).execute();
              await database.db.selectFrom('customers').selectAll().execute();
            })
            .catch((e: unknown) => e);
          expect(error).toBeInstanceOf(PoolTimeoutError);
          expect((error as Error).message).toMatch(/the database has one connection/);
        } finally {
          await transaction.rollback();
        }
      },
      { acquireTimeoutMs: 300 },
    );
  });

  test("a test transaction whose connection the server kills: the test's queries fail with CONNECTION_LOST, nothing stays, the next test works", async () => {
    await withShop('postgres', async (database) => {
      const transaction = await beginTestTransaction(database);
      await database.db.insertInto('customers').values({ id: 1, name: 'Gone with the connection' }).execute();
      const { rows } = await sql<{ pid: number }>`SELECT pg_backend_pid() AS pid`.execute(database.db);
      const killer = connect<unknown>(postgres!, { pool: { max: 1 } });
      try {
        await sql`SELECT pg_terminate_backend(${rows[0]!.pid})`.execute(killer.db);
      } finally {
        await killer.close();
      }
      await expect(database.db.selectFrom('customers').selectAll().execute()).rejects.toBeInstanceOf(ConnectionLostError);
      await expect(database.db.selectFrom('customers').selectAll().execute()).rejects.toBeInstanceOf(ConnectionLostError);
      // The server rolled it back: nothing leaked, so the end of the test is not an isolation failure.
      await transaction.rollback();
      expect(await database.db.selectFrom('customers').selectAll().execute()).toEqual([]);
      const next = await beginTestTransaction(database);
      await database.db.insertInto('customers').values({ id: 2, name: 'Next test' }).execute();
      await next.rollback();
      expect(await database.db.selectFrom('customers').selectAll().execute()).toEqual([]);
    });
  });

  test('PostgreSQL: a failed stream, and a commit refused for an earlier error, leave the test going on', async () => {
    await withShop('postgres', async (database) => {
      const transaction = await beginTestTransaction(database);
      try {
        await database.db.insertInto('customers').values({ id: 1, name: 'Ada' }).execute();
        const stream = async (): Promise<void> => {
          for await (const row of database.db.selectFrom('no_such_table' as 'customers').selectAll().stream(10)) void row;
        };
        await expect(stream()).rejects.toMatchObject({ code: 'QUERY_FAILED' });
        // Kysely's controlled transaction: its commit fails (an error inside it), and it still hands the connection on.
        const trx = await database.db.startTransaction().execute();
        await trx.insertInto('customers').values({ id: 1, name: 'Duplicate' }).execute().catch(() => {});
        await expect(trx.commit().execute()).rejects.toMatchObject({ code: 'TRANSACTION_ROLLED_BACK' });
        expect(await database.db.selectFrom('customers').select('name').execute()).toEqual([{ name: 'Ada' }]);
      } finally {
        await transaction.rollback();
      }
    });
  });

  test('a query waiting for its turn on the connection keeps its own deadline; so does a scope that has only a signal', async () => {
    await withShop(
      'postgres',
      async (database) => {
        const transaction = await beginTestTransaction(database);
        try {
          const events: string[] = [];
          await database.withConnection(async () => {
            const db = currentKysely(database.db);
            const slow = sql`SELECT pg_sleep(1)`.execute(db).then(() => events.push('slow statement done'));
            // On database.db: it shares the scope's connection (not queued behind the scope's own Kysely).
            const quick = database
              .withDeadline({ timeoutMs: 100 }, () => sql`SELECT 1`.execute(database.db))
              .catch((error: unknown) => events.push(`quick: ${(error as { code?: string }).code}`));
            await Promise.all([slow, quick]);
          });
          // The quick one gave up at its deadline, while the slow one still held the connection.
          expect(events).toEqual(['quick: QUERY_TIMEOUT', 'slow statement done']);

          // A waiter whose scope has a signal but no timeout still gives up at the acquire timeout.
          const held = database.withConnection(() => sql`SELECT pg_sleep(1)`.execute(currentKysely(database.db)));
          const waiter = database.withDeadline({ signal: new AbortController().signal }, () => database.db.selectFrom('customers').selectAll().execute());
          await expect(waiter).rejects.toBeInstanceOf(PoolTimeoutError);
          await held;
        } finally {
          await transaction.rollback();
        }
      },
      { acquireTimeoutMs: 300 },
    );
  });

  test('a stream left open at the end of the test: the end closes the connection instead of waiting for ever', async () => {
    await withShop('postgres', async (database) => {
      await database.db.insertInto('customers').values([1, 2, 3, 4, 5].map((id) => ({ id, name: `c${id}` }))).execute();
      const transaction = await beginTestTransaction(database);
      const rows = database.db.selectFrom('customers').selectAll().stream(1)[Symbol.asyncIterator]();
      await rows.next(); // never finished, never closed
      await transaction.rollback();
      expect(database.stats().inUse).toBe(0);
      expect(await database.db.selectFrom('customers').select('id').execute()).toHaveLength(5);
    });
  });

  test('a query still running for a test after its end fails with TEST_TRANSACTION_ENDED', async () => {
    await withShop('postgres', async (database) => {
      const transaction = await beginTestTransaction(database);
      let release!: () => void;
      const later = new Promise<void>((resolve) => (release = resolve));
      const stray = database.withConnection(async () => {
        await later;
        return currentKysely(database.db).selectFrom('customers').selectAll().execute();
      });
      await new Promise((resolve) => setTimeout(resolve, 20));
      await transaction.rollback();
      release();
      await expect(stray).rejects.toMatchObject({ code: 'TEST_TRANSACTION_ENDED' });
    });
  });
});
