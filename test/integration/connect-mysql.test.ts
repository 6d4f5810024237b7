import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, inject, test } from 'vitest';
import { QueryTimeoutError } from '../../src/drivers/errors.js';
import { connect, type Database } from '../../src/orm/connect.js';

const url = inject('backends').mysql;

interface DB {
  sluice_connect_mysql_person: { id: number; name: string };
}

describe.skipIf(url === '')('connect() over MySQL/MariaDB (real server)', () => {
  let database: Database<DB>;

  beforeAll(async () => {
    database = connect<DB>(url, { pool: { max: 4 } });
    await sql`DROP TABLE IF EXISTS sluice_connect_mysql_person`.execute(database.db);
    await sql`CREATE TABLE sluice_connect_mysql_person (id int PRIMARY KEY, name varchar(100) NOT NULL) ENGINE=InnoDB`.execute(
      database.db,
    );
  });
  afterAll(async () => {
    await sql`DROP TABLE IF EXISTS sluice_connect_mysql_person`.execute(database.db);
    await database.close();
  });

  async function running(marker: string): Promise<number> {
    const result = await sql<{ n: number }>`SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE INFO LIKE ${`%${marker}%`} AND ID <> CONNECTION_ID()`.execute(
      database.db,
    );
    return Number(result.rows[0]!.n);
  }

  test('a wrong password fails at once with AUTH_FAILED, naming no secret', async () => {
    const target = new URL(url);
    target.username = 'root';
    target.password = 'sluice-wrong-password';
    const wrong = connect<DB>(target.toString(), { pool: { acquireTimeoutMs: 60_000 } });
    const error = await sql`SELECT 1`.execute(wrong.db).catch((e: unknown) => e);
    expect((error as { code?: string }).code).toBe('AUTH_FAILED');
    expect((error as Error).message).not.toContain('sluice-wrong-password');
    await wrong.close();
  });

  test('plain Kysely queries run through the pool', async () => {
    await database.db.insertInto('sluice_connect_mysql_person').values({ id: 1, name: 'Ada' }).execute();
    const rows = await database.db.selectFrom('sluice_connect_mysql_person').selectAll().execute();
    expect(rows).toEqual([{ id: 1, name: 'Ada' }]);
    expect(database.stats()).toMatchObject({ inUse: 0 });
  });

  test('withDeadline kills a Kysely query on the server with QUERY_TIMEOUT', async () => {
    const marker = `sluice_scope_${Date.now()}`;
    const error = await database
      .withDeadline({ timeoutMs: 200 }, () => sql`SELECT SLEEP(10) /* ${sql.raw(marker)} */`.execute(database.db))
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(QueryTimeoutError);
    expect(await running(marker)).toBe(0);
    expect(database.stats()).toMatchObject({ inUse: 0 });
  });

  test('a failed transaction leaves no partial write; a nested one rolls back to its savepoint', async () => {
    await expect(
      database.transaction(async (trx) => {
        await trx.insertInto('sluice_connect_mysql_person').values({ id: 2, name: 'Grace' }).execute();
        throw new Error('changed my mind');
      }),
    ).rejects.toThrow('changed my mind');
    await database.transaction(
      async (trx) => {
        await trx.insertInto('sluice_connect_mysql_person').values({ id: 3, name: 'Edsger' }).execute();
        await database
          .transaction(async (inner) => {
            await inner.insertInto('sluice_connect_mysql_person').values({ id: 4, name: 'Barbara' }).execute();
            throw new Error('inner only');
          })
          .catch(() => {});
      },
      { isolation: 'serializable' },
    );
    const ids = (await database.db.selectFrom('sluice_connect_mysql_person').select('id').orderBy('id').execute()).map((r) => r.id);
    expect(ids).toEqual([1, 3]);
  });

  test('a transaction past its deadline is rolled back', async () => {
    const error = await database
      .transaction(
        async (trx) => {
          await trx.insertInto('sluice_connect_mysql_person').values({ id: 5, name: 'Late' }).execute();
          await sql`SELECT SLEEP(10)`.execute(trx);
        },
        { timeoutMs: 200 },
      )
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(QueryTimeoutError);
    const late = await database.db.selectFrom('sluice_connect_mysql_person').select('id').where('id', '=', 5).execute();
    expect(late).toEqual([]);
    expect(database.stats()).toMatchObject({ inUse: 0 });
  });
});
