import { sql } from 'kysely';
import mysql from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, test, vi } from 'vitest';
import { testServerUrl } from 'sluice/testing/vitest';
import { QueryTimeoutError } from '../../src/drivers/errors.js';
import { connect, type Database } from '../../src/orm/connect.js';

const url = testServerUrl('mysql') ?? '';

interface DB {
  sluice_connect_mysql_person: { id: number; name: string };
}

/** The digits 0-9 as a derived table: row sources built from it run on MySQL 8 and MariaDB alike. */
const DIGITS = `(${Array.from({ length: 10 }, (_, d) => `SELECT ${d} AS d`).join(' UNION ALL ')})`;

/** SQL for the numbers 1 to 10^powers as `n`, with `columns` added (no order: add one). */
function numbers(powers: number, columns = ''): string {
  const tables = Array.from({ length: powers }, (_, i) => `${DIGITS} AS d${i}`).join(' CROSS JOIN ');
  const n = Array.from({ length: powers }, (_, i) => `${10 ** i} * d${i}.d`).join(' + ');
  return `SELECT 1 + ${n} AS n${columns} FROM ${tables}`;
}

describe.skipIf(url === '')('connect() over MySQL/MariaDB (real server)', () => {
  let database: Database<DB>;
  /** A connection outside the pool, to watch the server (a deadline scope does not reach it). */
  let monitor: mysql.Connection;

  beforeAll(async () => {
    database = connect<DB>(url, { pool: { max: 4 } });
    monitor = await mysql.createConnection({ uri: url });
    await sql`DROP TABLE IF EXISTS sluice_connect_mysql_person`.execute(database.db);
    await sql`CREATE TABLE sluice_connect_mysql_person (id int PRIMARY KEY, name varchar(100) NOT NULL) ENGINE=InnoDB`.execute(
      database.db,
    );
  });
  afterAll(async () => {
    await sql`DROP TABLE IF EXISTS sluice_connect_mysql_person`.execute(database.db);
    await database.close();
    await monitor.end();
  });

  /** Statements whose text holds `marker` running on the server, seen from outside the pool. */
  async function runningOnServer(marker: string): Promise<number> {
    const [rows] = await monitor.query<mysql.RowDataPacket[]>(
      "SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE COMMAND IN ('Query', 'Execute') AND INFO LIKE ? AND ID <> CONNECTION_ID()",
      [`%${marker}%`],
    );
    return Number(rows[0]!.n);
  }

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
    // The caller does not wait for the KILL; the server lets go well within the 10 s, and
    // the connection goes back to the pool once it has.
    await expect.poll(() => running(marker)).toBe(0);
    await expect.poll(() => database.stats().inUse).toBe(0);
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
    await expect.poll(() => database.stats().inUse).toBe(0);
    const late = await database.db.selectFrom('sluice_connect_mysql_person').select('id').where('id', '=', 5).execute();
    expect(late).toEqual([]);
  });

  test('Kysely .stream() yields every row, in order, in chunks of chunkSize', async () => {
    // Straight from the driver, the chunks themselves: full ones, then the rest.
    const sizes = await database.pool.use(async (connection) => {
      const seen: number[] = [];
      for await (const rows of connection.stream!(`${numbers(3)} ORDER BY n`, [], { chunkSize: 64 })) seen.push(rows.length);
      return seen;
    });
    expect(sizes).toEqual([...Array<number>(15).fill(64), 40]);
    // Through Kysely, with a bound parameter.
    const table = sql<{ n: number }>`(${sql.raw(numbers(3))})`;
    const seen: number[] = [];
    for await (const row of database.db.selectFrom(table.as('t')).select('n').where('n', '<=', 700).orderBy('n').stream(100)) {
      seen.push(Number(row.n));
    }
    expect(seen).toEqual(Array.from({ length: 700 }, (_, i) => i + 1));
    await vi.waitFor(() => expect(database.stats()).toMatchObject({ inUse: 0 }));
  });

  test('stopping a stream early gives the connection back clean, with nothing left running on the server', async () => {
    const marker = `sluice_stream_break_${Date.now()}`;
    // 100,000 rows of 1 kB: far more than is in flight when the loop stops.
    const big = sql<{ n: number; pad: string }>`(${sql.raw(`${numbers(5, ", REPEAT('x', 1000) AS pad")} /* ${marker} */`)})`;
    const destroyedBefore = database.stats().totals.destroyed;
    let seen = 0;
    for await (const _ of database.db.selectFrom(big.as('t')).selectAll().stream(10)) {
      if (++seen === 25) break;
    }
    expect(seen).toBe(25);
    // Kysely gives the connection back just after the loop ends.
    await vi.waitFor(() => expect(database.stats()).toMatchObject({ inUse: 0 }));
    expect(await runningOnServer(marker)).toBe(0);
    // Given back to the pool, not destroyed.
    expect(database.stats().totals.destroyed).toBe(destroyedBefore);
    expect(database.stats().idle).toBeGreaterThan(0);
    expect((await sql<{ one: number }>`SELECT 1 AS one`.execute(database.db)).rows).toEqual([{ one: 1 }]);
  });

  test('a deadline cancels a stream on the server with QUERY_TIMEOUT', async () => {
    const marker = `sluice_stream_deadline_${Date.now()}`;
    // 10 ms a row, 10,000 rows: 100 s (past the test's timeout) unless killed. (All columns
    // selected: an unused one would be dropped from the derived table, SLEEP with it.)
    const slow = sql<{ n: number; z: number }>`(${sql.raw(`${numbers(4, ', SLEEP(0.01) AS z')} /* ${marker} */`)})`;
    const destroyedBefore = database.stats().totals.destroyed;
    const error = await database
      .withDeadline({ timeoutMs: 300 }, async () => {
        let rows = 0;
        for await (const _ of database.db.selectFrom(slow.as('t')).selectAll().stream(5)) rows++;
        return rows;
      })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(QueryTimeoutError);
    expect((error as QueryTimeoutError).code).toBe('QUERY_TIMEOUT');
    // The caller is answered at the deadline; the KILL lands just after.
    await expect.poll(() => runningOnServer(marker)).toBe(0);
    await vi.waitFor(() => expect(database.stats()).toMatchObject({ inUse: 0 }));
    // Killed mid-statement, the connection was clean: kept.
    expect(database.stats().totals.destroyed).toBe(destroyedBefore);
    expect((await sql<{ one: number }>`SELECT 1 AS one`.execute(database.db)).rows).toEqual([{ one: 1 }]);
  });

  test('an abort kills a stream on the server at once, even while a chunk is being consumed, and rejects with its reason', async () => {
    const marker = `sluice_stream_abort_${Date.now()}`;
    // Rows of 4 kB, so the server sends them as they come (10 ms each), not once its buffer
    // fills; 10,000 of them: 100 s unless killed.
    const slow = sql<{ n: number; z: number; pad: string }>`(${sql.raw(`${numbers(4, ", SLEEP(0.01) AS z, REPEAT('x', 4000) AS pad")} /* ${marker} */`)})`;
    const controller = new AbortController();
    const reason = new Error('the client went away');
    let seen = 0;
    const error = await database
      .withDeadline({ signal: controller.signal }, async () => {
        for await (const _ of database.db.selectFrom(slow.as('t')).selectAll().stream(5)) {
          if (++seen > 1) continue;
          await expect.poll(() => runningOnServer(marker), { timeout: 5_000 }).toBe(1);
          controller.abort(reason);
          // Killed while this chunk is still being consumed, before the next is asked for.
          await expect.poll(() => runningOnServer(marker), { timeout: 5_000 }).toBe(0);
        }
      })
      .catch((e: unknown) => e);
    expect(error).toBe(reason);
    // The chunk in hand was consumed; no row after the abort.
    expect(seen).toBe(5);
    await vi.waitFor(() => expect(database.stats()).toMatchObject({ inUse: 0 }));
    expect((await sql<{ one: number }>`SELECT 1 AS one`.execute(database.db)).rows).toEqual([{ one: 1 }]);
  });
});
