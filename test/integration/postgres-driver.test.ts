import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { testServerUrl } from 'sluice/testing/vitest';
import pg from 'pg';
import type { DriverConnection } from '../../src/drivers/driver.js';
import { ConnectionError, DatabaseError, ForeignKeyViolationError, QueryTimeoutError, UniqueViolationError } from '../../src/drivers/errors.js';
import { PostgresDriver } from '../../src/drivers/postgres/postgres-driver.js';

const url = testServerUrl('postgres') ?? '';

/** A connection outside the code under test, to watch the server. */
let monitor: pg.Client;

async function runningStatements(marker: string): Promise<number> {
  const { rows } = await monitor.query<{ count: string }>(
    "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1 AND pid <> pg_backend_pid()",
    [`%${marker}%`],
  );
  return Number(rows[0]!.count);
}

const connect = (driver: PostgresDriver): Promise<DriverConnection> =>
  driver.connect({ signal: new AbortController().signal });

describe.skipIf(url === '')('PostgreSQL driver (real server)', () => {
  const driver = new PostgresDriver({ connectionString: url });

  beforeAll(async () => {
    monitor = new pg.Client({ connectionString: url });
    await monitor.connect();
  });
  afterAll(async () => {
    await monitor.end();
  });

  test('runs a statement with bound parameters', async () => {
    const connection = await connect(driver);
    const result = await connection.run<{ sum: number; text: string }>('SELECT $1::int + $2::int AS sum, $3::text AS text', [
      2,
      3,
      "O'Reilly; DROP TABLE x",
    ]);
    expect(result.rows).toEqual([{ sum: 5, text: "O'Reilly; DROP TABLE x" }]);
    await connection.close();
  });

  test('a deadline cancels the statement on the server, and the connection stays usable', async () => {
    const connection = await connect(driver);
    const marker = `sluice_cancel_${Date.now()}`;
    const timeout = new QueryTimeoutError(200);
    const controller = new AbortController();
    setTimeout(() => controller.abort(timeout), 200);
    const error = await connection
      .run(`SELECT pg_sleep(10) /* ${marker} */`, [], { signal: controller.signal })
      .catch((e: unknown) => e);
    expect(error).toBe(timeout);
    expect((error as QueryTimeoutError).code).toBe('QUERY_TIMEOUT');
    // Gone from the server, not left running for its 10 s.
    expect(await runningStatements(marker)).toBe(0);
    expect(connection.broken).toBe(false);
    expect((await connection.run<{ one: number }>('SELECT 1 AS one', [])).rows).toEqual([{ one: 1 }]);
    await connection.close();
  });

  test('an abort rejects with signal.reason and also cancels on the server', async () => {
    const connection = await connect(driver);
    const marker = `sluice_abort_${Date.now()}`;
    const controller = new AbortController();
    const reason = new Error('client disconnected');
    const running = connection.run(`SELECT pg_sleep(10) /* ${marker} */`, [], { signal: controller.signal });
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(await runningStatements(marker)).toBe(1);
    controller.abort(reason);
    await expect(running).rejects.toBe(reason);
    expect(await runningStatements(marker)).toBe(0);
    await connection.close();
  });

  test('a connection killed by the server while idle is reported broken, not thrown', async () => {
    const connection = await connect(driver);
    const { rows } = await connection.run<{ pid: number }>('SELECT pg_backend_pid() AS pid', []);
    const broken = new Promise<unknown>((resolve) => connection.onBroken(resolve));
    await monitor.query('SELECT pg_terminate_backend($1)', [rows[0]!.pid]);
    const error = await broken;
    expect(error).toBeDefined();
    expect(connection.broken).toBe(true);
    expect(driver.isFatal(await connection.run('SELECT 1', []).catch((e: unknown) => e))).toBe(true);
    await connection.close();
  });

  test('a connection killed while busy fails only its own statement, as fatal', async () => {
    const connection = await connect(driver);
    const { rows } = await connection.run<{ pid: number }>('SELECT pg_backend_pid() AS pid', []);
    const running = connection.run('SELECT pg_sleep(10)', []).catch((e: unknown) => e);
    await new Promise((resolve) => setTimeout(resolve, 100));
    await monitor.query('SELECT pg_terminate_backend($1)', [rows[0]!.pid]);
    const error = await running;
    expect(driver.isFatal(error)).toBe(true);
    expect((error as { code: string }).code).toBe('CONNECTION_LOST');
    await connection.close();
  });

  test('server errors get stable codes, SQLSTATE and the driver error as cause', async () => {
    const connection = await connect(driver);
    await connection.run('DROP TABLE IF EXISTS sluice_child, sluice_parent', []);
    await connection.run('CREATE TABLE sluice_parent (id int PRIMARY KEY)', []);
    await connection.run('CREATE TABLE sluice_child (id int PRIMARY KEY, parent int REFERENCES sluice_parent)', []);
    await connection.run('INSERT INTO sluice_parent VALUES (1)', []);
    const duplicate = await connection.run('INSERT INTO sluice_parent VALUES (1)', []).catch((e: unknown) => e);
    expect(duplicate).toBeInstanceOf(UniqueViolationError);
    expect((duplicate as DatabaseError).sqlState).toBe('23505');
    expect((duplicate as DatabaseError).cause).toBeInstanceOf(Error);
    const orphan = await connection.run('INSERT INTO sluice_child VALUES (1, 99)', []).catch((e: unknown) => e);
    expect(orphan).toBeInstanceOf(ForeignKeyViolationError);
    const syntax = await connection.run('SELEC 1', []).catch((e: unknown) => e);
    expect((syntax as DatabaseError).code).toBe('QUERY_FAILED');
    expect((syntax as DatabaseError).sqlState).toBe('42601');
    expect(connection.broken).toBe(false);
    await connection.run('DROP TABLE sluice_child, sluice_parent', []);
    await connection.close();
  });

  test('reset() rolls back a transaction left open', async () => {
    const connection = await connect(driver);
    await connection.run('DROP TABLE IF EXISTS sluice_reset', []);
    await connection.run('CREATE TABLE sluice_reset (id int)', []);
    await connection.run('BEGIN', []);
    await connection.run('INSERT INTO sluice_reset VALUES (1)', []);
    await connection.reset();
    const { rows } = await monitor.query('SELECT count(*)::int AS n FROM sluice_reset');
    expect(rows).toEqual([{ n: 0 }]);
    await connection.run('DROP TABLE sluice_reset', []);
    await connection.close();
  });

  test('statements are prepared once per connection, in a bounded cache', async () => {
    const connection = await new PostgresDriver({ connectionString: url, statementCacheSize: 2 }).connect({
      signal: new AbortController().signal,
    });
    const prepared = async (): Promise<string[]> =>
      (await connection.run<{ statement: string }>('SELECT statement FROM pg_prepared_statements ORDER BY statement', [])).rows.map(
        (row) => row.statement,
      );
    await connection.run('SELECT $1::int AS a', [1]);
    await connection.run('SELECT $1::int AS a', [2]);
    expect(await prepared()).toEqual(['SELECT $1::int AS a', 'SELECT statement FROM pg_prepared_statements ORDER BY statement']);
    await connection.run('SELECT $1::int AS b', [3]);
    // Capacity 2: the least recently used one was deallocated on the server.
    expect(await prepared()).not.toContain('SELECT $1::int AS a');
    expect((await prepared()).length).toBeLessThanOrEqual(2);
    await connection.close();
  });

  test('a cached statement whose result type changed (DDL) is re-prepared, not failed', async () => {
    const connection = await connect(driver);
    await connection.run('DROP TABLE IF EXISTS sluice_stale', []);
    await connection.run('CREATE TABLE sluice_stale (id int)', []);
    await connection.run('INSERT INTO sluice_stale VALUES (1)', []);
    expect((await connection.run('SELECT * FROM sluice_stale', [])).rows).toEqual([{ id: 1 }]);
    await connection.run("ALTER TABLE sluice_stale ADD COLUMN name text DEFAULT 'x'", []);
    expect((await connection.run('SELECT * FROM sluice_stale', [])).rows).toEqual([{ id: 1, name: 'x' }]);
    await connection.run('DROP TABLE sluice_stale', []);
    await connection.close();
  });

  test('an unknown database fails fast with UNKNOWN_DATABASE, marked permanent', async () => {
    const target = new URL(url);
    target.pathname = '/sluice_no_such_database';
    const error = await connect(new PostgresDriver({ connectionString: target.toString() })).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConnectionError);
    expect((error as ConnectionError).code).toBe('UNKNOWN_DATABASE');
    expect((error as ConnectionError).permanent).toBe(true);
  });

  test('an unknown user fails fast with AUTH_FAILED, marked permanent, and names no secret', async () => {
    // This server trusts every local user, so a wrong password cannot be refused here; an
    // unknown role is refused at authentication all the same (SQLSTATE 28000).
    const target = new URL(url);
    target.username = 'sluice_no_such_role';
    target.password = 'sluice-secret-pw';
    const error = await connect(new PostgresDriver({ connectionString: target.toString() })).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConnectionError);
    expect(error).toMatchObject({ code: 'AUTH_FAILED', permanent: true, sqlState: '28000' });
    expect((error as Error).message).not.toContain('sluice-secret-pw');
    expect(String(error)).not.toContain(target.toString());
  });

  test('a refused connection is CONNECTION_FAILED, transient, and names no secret', async () => {
    const error = await connect(
      new PostgresDriver({ connectionString: 'postgres://app:hunter2@127.0.0.1:1/orders' }),
    ).catch((e: unknown) => e);
    expect((error as ConnectionError).code).toBe('CONNECTION_FAILED');
    expect((error as ConnectionError).permanent).toBe(false);
    expect((error as Error).message).not.toContain('hunter2');
    expect((error as Error).message).toContain('127.0.0.1:1');
  });
});
