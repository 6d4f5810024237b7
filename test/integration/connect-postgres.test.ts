import { sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, test, vi } from 'vitest';
import { testServerUrl } from 'sluice/testing/vitest';
import { QueryTimeoutError, TransactionRolledBackError } from '../../src/drivers/errors.js';
import { connect, type Database } from '../../src/orm/connect.js';

const url = testServerUrl('postgres') ?? '';

interface DB {
  sluice_connect_person: { id: number; name: string };
}

describe.skipIf(url === '')('connect() over PostgreSQL (real server)', () => {
  let database: Database<DB>;
  let monitor: pg.Client;

  beforeAll(async () => {
    database = connect<DB>(url, { pool: { max: 4 } });
    monitor = new pg.Client({ connectionString: url });
    await monitor.connect();
    await sql`DROP TABLE IF EXISTS sluice_connect_person`.execute(database.db);
    await sql`CREATE TABLE sluice_connect_person (id int PRIMARY KEY, name text NOT NULL)`.execute(database.db);
  });
  afterAll(async () => {
    await sql`DROP TABLE IF EXISTS sluice_connect_person`.execute(database.db);
    await database.close();
    await monitor.end();
  });

  test('plain Kysely queries run through the pool', async () => {
    await database.db.insertInto('sluice_connect_person').values({ id: 1, name: 'Ada' }).execute();
    const rows = await database.db.selectFrom('sluice_connect_person').selectAll().execute();
    expect(rows).toEqual([{ id: 1, name: 'Ada' }]);
    expect(database.stats()).toMatchObject({ inUse: 0 });
    expect(database.stats().size).toBeGreaterThan(0);
  });

  test('withDeadline cancels a Kysely query on the server with QUERY_TIMEOUT', async () => {
    const marker = `sluice_scope_${Date.now()}`;
    const error = await database
      .withDeadline({ timeoutMs: 200 }, () => sql`SELECT pg_sleep(10) /* ${sql.raw(marker)} */`.execute(database.db))
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(QueryTimeoutError);
    // The caller does not wait for the cancel; the server lets go of the statement well
    // within its 10 s, and the connection goes back to the pool once it has.
    await expect
      .poll(async () => {
        const { rows } = await monitor.query<{ n: number }>(
          "SELECT count(*)::int AS n FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1 AND pid <> pg_backend_pid()",
          [`%${marker}%`],
        );
        return rows[0]!.n;
      })
      .toBe(0);
    await expect.poll(() => database.stats()).toMatchObject({ inUse: 0, idle: database.stats().size });
  });

  test('a failed transaction leaves no partial write; a nested one rolls back to its savepoint', async () => {
    await expect(
      database.transaction(async (trx) => {
        await trx.insertInto('sluice_connect_person').values({ id: 2, name: 'Grace' }).execute();
        throw new Error('changed my mind');
      }),
    ).rejects.toThrow('changed my mind');
    await database.transaction(async (trx) => {
      await trx.insertInto('sluice_connect_person').values({ id: 3, name: 'Edsger' }).execute();
      await database
        .transaction(async (inner) => {
          await inner.insertInto('sluice_connect_person').values({ id: 4, name: 'Barbara' }).execute();
          throw new Error('inner only');
        })
        .catch(() => {});
    });
    const ids = (await database.db.selectFrom('sluice_connect_person').select('id').orderBy('id').execute()).map((r) => r.id);
    expect(ids).toEqual([1, 3]);
  });

  test('a transaction past its deadline is rolled back and its connection reused cleanly', async () => {
    const error = await database
      .transaction(
        async (trx) => {
          await trx.insertInto('sluice_connect_person').values({ id: 5, name: 'Late' }).execute();
          await sql`SELECT pg_sleep(10)`.execute(trx);
        },
        { timeoutMs: 200 },
      )
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(QueryTimeoutError);
    await expect.poll(() => database.stats().inUse).toBe(0);
    const late = await database.db.selectFrom('sluice_connect_person').select('id').where('id', '=', 5).execute();
    expect(late).toEqual([]);
  });

  test('an unknown database fails at once with UNKNOWN_DATABASE, not after the acquire timeout', async () => {
    const target = new URL(url);
    target.pathname = '/sluice_no_such_database';
    const wrong = connect<DB>(target.toString(), { pool: { acquireTimeoutMs: 60_000 } });
    const error = await sql`SELECT 1`.execute(wrong.db).catch((e: unknown) => e);
    expect((error as { code?: string }).code).toBe('UNKNOWN_DATABASE');
    await wrong.close();
  });

  test('Kysely .stream() yields rows in chunks; stopping early gives the connection back', async () => {
    const numbers = sql<{ n: number }>`(SELECT g AS n FROM generate_series(1, 1000) AS g)`;
    let seen = 0;
    let last = 0;
    for await (const row of database.db.selectFrom(numbers.as('t')).selectAll().stream(100)) {
      seen++;
      last = row.n;
    }
    expect([seen, last]).toEqual([1000, 1000]);
    for await (const row of database.db.selectFrom(numbers.as('t')).selectAll().stream(10)) {
      if (row.n === 25) break;
    }
    // Kysely gives the connection back just after the loop ends.
    await vi.waitFor(() => expect(database.stats()).toMatchObject({ inUse: 0 }));
    expect((await sql<{ one: number }>`SELECT 1 AS one`.execute(database.db)).rows).toEqual([{ one: 1 }]);
  });

  test('a transaction whose statement failed, even caught, does not report a commit that PostgreSQL turned into a rollback', async () => {
    const outcome = await database
      .transaction(async (trx) => {
        await trx.insertInto('sluice_connect_person').values({ id: 50, name: 'lost' }).execute();
        // Caught, but PostgreSQL has aborted the transaction: COMMIT will roll it back.
        await database.withDeadline({ timeoutMs: 100 }, () => sql`SELECT pg_sleep(10)`.execute(trx)).catch(() => {});
      })
      .catch((error: unknown) => error);
    expect(outcome).toBeInstanceOf(TransactionRolledBackError);
    expect(outcome).toMatchObject({ code: 'TRANSACTION_ROLLED_BACK' });
    expect(await database.db.selectFrom('sluice_connect_person').select('id').where('id', '=', 50).execute()).toEqual([]);
  });

  test('nested transactions started together run one after another: a failed one undoes only its own writes', async () => {
    await database.transaction(async () => {
      const outcomes = await Promise.allSettled([
        database.transaction(async (inner) => {
          await inner.insertInto('sluice_connect_person').values({ id: 60, name: 'undone' }).execute();
          await sql`SELECT pg_sleep(0.05)`.execute(inner);
          throw new Error('undo 60');
        }),
        database.transaction(async (inner) => {
          await inner.insertInto('sluice_connect_person').values({ id: 61, name: 'kept' }).execute();
        }),
      ]);
      expect(outcomes.map((outcome) => outcome.status)).toEqual(['rejected', 'fulfilled']);
    });
    const ids = await database.db.selectFrom('sluice_connect_person').select('id').where('id', 'in', [60, 61]).execute();
    expect(ids).toEqual([{ id: 61 }]);
  });

  test('inside a transaction, after a nested deadline, streams stopped early leave the connection usable', async () => {
    const numbers = sql<{ n: number }>`(SELECT g AS n FROM generate_series(1, 100) AS g)`;
    const firsts = await database.transaction(async (trx) => {
      // A nested transaction past its deadline: rolled back to its savepoint, caught.
      const timedOut = await database
        .transaction(async (inner) => sql`SELECT pg_sleep(10)`.execute(inner), { timeoutMs: 100 })
        .catch((error: unknown) => error);
      expect(timedOut).toBeInstanceOf(QueryTimeoutError);
      const seen: number[] = [];
      for (let i = 0; i < 2; i++) {
        for await (const row of trx.selectFrom(numbers.as('t')).selectAll().stream(1)) {
          seen.push(row.n);
          break;
        }
      }
      await trx.insertInto('sluice_connect_person').values({ id: 40, name: 'after streams' }).execute();
      return seen;
    });
    expect(firsts).toEqual([1, 1]);
    expect(await database.db.selectFrom('sluice_connect_person').select('name').where('id', '=', 40).execute()).toEqual([
      { name: 'after streams' },
    ]);
    await vi.waitFor(() => expect(database.stats()).toMatchObject({ inUse: 0 }));
  });

  test('a deadline that passes while the consumer holds a chunk ends the stream without costing the connection', async () => {
    const numbers = sql<{ n: number }>`(SELECT g AS n FROM generate_series(1, 1000) AS g)`;
    const destroyedBefore = database.stats().totals.destroyed;
    const error = await database
      .withDeadline({ timeoutMs: 200 }, async () => {
        for await (const _ of database.db.selectFrom(numbers.as('t')).selectAll().stream(10)) {
          // Nothing runs on the server while the consumer holds a chunk past the deadline.
          await new Promise((resolve) => setTimeout(resolve, 400));
        }
      })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(QueryTimeoutError);
    await vi.waitFor(() => expect(database.stats()).toMatchObject({ inUse: 0 }));
    // No cancel was needed, so the connection's state was never in doubt: kept.
    expect(database.stats().totals.destroyed).toBe(destroyedBefore);
  });

  test('a deadline cancels a stream on the server', async () => {
    const slow = sql<{ n: number }>`(SELECT g AS n, pg_sleep(0.05) FROM generate_series(1, 1000) AS g)`;
    const error = await database
      .withDeadline({ timeoutMs: 300 }, async () => {
        let rows = 0;
        for await (const _ of database.db.selectFrom(slow.as('t')).select('n').stream(5)) rows++;
        return rows;
      })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(QueryTimeoutError);
    await vi.waitFor(() => expect(database.stats()).toMatchObject({ inUse: 0 }));
  });

  test('statementCacheSize reaches the driver: 0 prepares nothing; a bad size is refused at connect()', async () => {
    const prepared = async (database: ReturnType<typeof connect<DB>>): Promise<number> => {
      const { rows } = await sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_prepared_statements`.execute(database.db);
      return rows[0]!.n;
    };
    const uncached = connect<DB>(url, { pool: { max: 1 }, statementCacheSize: 0 });
    const cached = connect<DB>(url, { pool: { max: 1 } });
    try {
      for (const database of [uncached, cached]) {
        await database.db.selectFrom('sluice_connect_person').select('id').where('id', '=', 1).execute();
      }
      // The counting statement itself is prepared on the cached connection.
      expect(await prepared(uncached)).toBe(0);
      expect(await prepared(cached)).toBe(2);
    } finally {
      await uncached.close();
      await cached.close();
    }
    expect(() => connect(url, { statementCacheSize: -1 })).toThrow(/statementCacheSize/);
  });

  test('close() closes the pool even when Kysely itself was never used', async () => {
    const direct = connect<DB>(url, { pool: { max: 1 } });
    await direct.pool.use((connection) => connection.run('SELECT 1', []));
    expect(direct.stats().size).toBe(1);
    await direct.close();
    expect(direct.stats()).toMatchObject({ size: 0, closed: true });
  });

  test('a bad URL is refused without echoing it', () => {
    expect(() => connect('postgres//app:hunter2@nowhere')).toThrow(/not a valid URL/);
    try {
      connect('oracle://app:hunter2@db/orders');
    } catch (error) {
      expect((error as Error).message).not.toContain('hunter2');
    }
  });
});
