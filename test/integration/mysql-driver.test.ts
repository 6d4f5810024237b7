import { connect as connectTcp, createServer, type Server, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { testServerUrl } from 'sluice/testing/vitest';
import mysql from 'mysql2/promise';
import type { DriverConnection } from '../../src/drivers/driver.js';
import {
  ConnectionError,
  ConnectionLostError,
  DatabaseError,
  DeadlockError,
  ForeignKeyViolationError,
  QueryTimeoutError,
  UniqueViolationError,
} from '../../src/drivers/errors.js';
import { MysqlDriver } from '../../src/drivers/mysql/mysql-driver.js';
import { runNode } from '../support/run-node.js';

const url = testServerUrl('mysql') ?? '';

/** A connection outside the code under test, to watch the server. */
let monitor: mysql.Connection;

/** Statements whose text contains `marker` running on the server (the monitor's own excluded). */
async function runningStatements(marker: string): Promise<number> {
  const [rows] = await monitor.query<mysql.RowDataPacket[]>(
    "SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE COMMAND IN ('Query', 'Execute') AND INFO LIKE ? AND ID <> CONNECTION_ID()",
    [`%${marker}%`],
  );
  return Number(rows[0]!.n);
}

async function threadIds(): Promise<Set<number>> {
  const [rows] = await monitor.query<mysql.RowDataPacket[]>('SELECT ID AS id FROM information_schema.PROCESSLIST');
  return new Set(rows.map((row) => Number(row.id)));
}

async function threadIdOf(connection: DriverConnection): Promise<number> {
  const { rows } = await connection.run<{ id: number }>('SELECT CONNECTION_ID() AS id', []);
  return Number(rows[0]!.id);
}

/** Rows in `table` as seen by `connection` (its own uncommitted rows included). */
async function countOn(connection: DriverConnection, table: string): Promise<number> {
  const { rows } = await connection.run<{ n: number }>(`SELECT COUNT(*) AS n FROM ${table}`, []);
  return Number(rows[0]!.n);
}

const connect = (driver: MysqlDriver): Promise<DriverConnection> => driver.connect({ signal: new AbortController().signal });

/**
 * A TCP proxy to the server. Each connection through it can be told to stop passing the
 * server's replies on (the shared test proxy stalls all of them at once, the control
 * connection included), and is known by the port the server sees it from.
 */
async function startProxy(
  host: string,
  port: number,
): Promise<{
  port: number;
  stall: (index: number) => void;
  upstreamPort: (index: number) => number | undefined;
  close: () => Promise<void>;
}> {
  const stalls: Array<() => void> = [];
  const upstreams: Socket[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = connectTcp(port, host);
    let stalled = false;
    sockets.add(client).add(upstream);
    upstreams.push(upstream);
    client.on('data', (data) => upstream.write(data));
    upstream.on('data', (data) => {
      if (!stalled) client.write(data);
    });
    const end = (): void => {
      client.destroy();
      upstream.destroy();
    };
    for (const socket of [client, upstream]) {
      socket.on('close', end);
      socket.on('error', end);
    }
    stalls.push(() => {
      stalled = true;
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as { port: number }).port,
    stall: (index) => stalls[index]!(),
    upstreamPort: (index) => upstreams[index]?.localPort,
    close: () =>
      new Promise((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/**
 * A TCP proxy that passes the server's bytes on only as fast as the client reads them (so
 * a client that stops reading makes the server wait), counting the bytes it took from the
 * server.
 */
async function startCountingProxy(
  host: string,
  port: number,
): Promise<{ port: number; fromServer: () => number; close: () => Promise<void> }> {
  let fromServer = 0;
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = connectTcp(port, host);
    sockets.add(client).add(upstream);
    client.pipe(upstream);
    upstream.on('data', (data: Buffer) => {
      fromServer += data.length;
      if (!client.write(data)) upstream.pause();
    });
    client.on('drain', () => upstream.resume());
    const end = (): void => {
      client.destroy();
      upstream.destroy();
    };
    for (const socket of [client, upstream]) {
      socket.on('close', end);
      socket.on('error', end);
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as { port: number }).port,
    fromServer: () => fromServer,
    close: () =>
      new Promise((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/** The digits 0-9 as a derived table: row sources built from it run on MySQL 8 and MariaDB alike. */
const DIGITS = `(${Array.from({ length: 10 }, (_, d) => `SELECT ${d} AS d`).join(' UNION ALL ')})`;

/** SQL for the numbers 1 to 10^powers as `n`, with `columns` added (no order: add one). */
function numbers(powers: number, columns = ''): string {
  const tables = Array.from({ length: powers }, (_, i) => `${DIGITS} AS d${i}`).join(' CROSS JOIN ');
  const n = Array.from({ length: powers }, (_, i) => `${10 ** i} * d${i}.d`).join(' + ');
  return `SELECT 1 + ${n} AS n${columns} FROM ${tables}`;
}

/** Reads a stream to its end or its error: the rows read, and the error (undefined when it ended). */
async function drain<Row>(chunks: AsyncIterable<Row[]>): Promise<{ rows: Row[]; error: unknown }> {
  const rows: Row[] = [];
  try {
    for await (const chunk of chunks) rows.push(...chunk);
    return { rows, error: undefined };
  } catch (error) {
    return { rows, error };
  }
}

describe.skipIf(url === '')('MySQL driver (real server)', () => {
  const driver = new MysqlDriver({ uri: url });

  beforeAll(async () => {
    monitor = await mysql.createConnection({ uri: url });
  });
  afterAll(async () => {
    await driver.close();
    await monitor.end();
  });

  test('runs a statement with bound parameters; rows are plain objects', async () => {
    const connection = await connect(driver);
    const result = await connection.run<{ sum: number; text: string }>('SELECT ? + ? AS sum, ? AS text', [
      2,
      3,
      "O'Reilly\\'; DROP TABLE x; -- \"",
    ]);
    expect(result.rows).toEqual([{ sum: 5, text: "O'Reilly\\'; DROP TABLE x; -- \"" }]);
    expect(Object.getPrototypeOf(result.rows[0])).toBe(Object.prototype);
    expect(result.affectedRows).toBeUndefined();
    expect(result.insertId).toBeUndefined();
    await connection.close();
  });

  test('rows stay objects and parameters positional when the URL asks mysql2 for arrays, nested tables or named placeholders', async () => {
    // mysql2 reads options from the URL's query string; sluice's results keep their shape.
    const target = new URL(url);
    target.searchParams.set('rowsAsArray', 'true');
    target.searchParams.set('nestTables', 'true');
    target.searchParams.set('namedPlaceholders', 'true');
    const configured = new MysqlDriver({ uri: target.toString() });
    try {
      const connection = await connect(configured);
      const { rows } = await connection.run<{ a: number; b: string }>('SELECT ? AS a, ? AS b', [1, ':b']);
      expect(rows).toEqual([{ a: 1, b: ':b' }]);
      expect(Object.getPrototypeOf(rows[0])).toBe(Object.prototype);
      await connection.close();
    } finally {
      await configured.close();
    }
  });

  test('writes report affectedRows and insertId as bigints', async () => {
    const connection = await connect(driver);
    await connection.run('DROP TABLE IF EXISTS sluice_mysql_items', []);
    await connection.run('CREATE TABLE sluice_mysql_items (id BIGINT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(50)) ENGINE=InnoDB', []);
    const first = await connection.run('INSERT INTO sluice_mysql_items (name) VALUES (?)', ['a']);
    expect(first.affectedRows).toBe(1n);
    expect(typeof first.insertId).toBe('bigint');
    const second = await connection.run('INSERT INTO sluice_mysql_items (name) VALUES (?), (?)', ['b', 'c']);
    expect(second.affectedRows).toBe(2n);
    expect(second.insertId).toBe(first.insertId! + 1n);
    const updated = await connection.run('UPDATE sluice_mysql_items SET name = ? WHERE id > ?', ['z', 0]);
    expect(updated.affectedRows).toBe(3n);
    expect(updated.insertId).toBeUndefined();
    const { rows } = await connection.run<{ name: string }>('SELECT name FROM sluice_mysql_items WHERE id = ?', [first.insertId]);
    expect(rows).toEqual([{ name: 'z' }]);
    await connection.run('DROP TABLE sluice_mysql_items', []);
    await connection.close();
  });

  test('a deadline kills the statement on the server, and the connection stays usable', async () => {
    const connection = await connect(driver);
    const marker = `sluice_mysql_deadline_${Date.now()}`;
    const timeout = new QueryTimeoutError(200);
    const controller = new AbortController();
    const running = connection.run(`SELECT SLEEP(10) /* ${marker} */`, [], { signal: controller.signal }).catch((e: unknown) => e);
    await expect.poll(() => runningStatements(marker), { timeout: 5_000 }).toBe(1);
    controller.abort(timeout);
    const error = await running;
    expect(error).toBe(timeout);
    expect((error as QueryTimeoutError).code).toBe('QUERY_TIMEOUT');
    // Gone from the server, not left running for its 10 s.
    expect(await runningStatements(marker)).toBe(0);
    expect(connection.broken).toBe(false);
    expect((await connection.run<{ one: number }>('SELECT 1 AS one', [])).rows).toEqual([{ one: 1 }]);
    await connection.close();
  });

  test('an abort rejects with signal.reason, also when the killed statement returns normally', async () => {
    const connection = await connect(driver);
    // MariaDB's DO SLEEP(n) swallows KILL QUERY and returns OK (as MySQL's lone SELECT SLEEP(n) returns 1).
    const marker = `sluice_mysql_abort_${Date.now()}`;
    const controller = new AbortController();
    const reason = new Error('client disconnected');
    const running = connection.run(`DO SLEEP(10) /* ${marker} */`, [], { signal: controller.signal });
    await expect.poll(() => runningStatements(marker), { timeout: 5_000 }).toBe(1);
    controller.abort(reason);
    await expect(running).rejects.toBe(reason);
    expect(await runningStatements(marker)).toBe(0);
    expect(connection.broken).toBe(false);
    expect((await connection.run<{ one: number }>('SELECT 1 AS one', [])).rows).toEqual([{ one: 1 }]);

    // Already aborted: nothing is sent.
    const early = new Error('gone before it started');
    await expect(connection.run('SELECT 1', [], { signal: AbortSignal.abort(early) })).rejects.toBe(early);
    expect(connection.broken).toBe(false);
    await connection.close();
  });

  test('a server that does not let go in time: the connection is broken and killed, nothing keeps running', async () => {
    const target = new URL(url);
    const proxy = await startProxy(target.hostname, Number(target.port || 3306));
    const proxied = new URL(url);
    proxied.host = `127.0.0.1:${proxy.port}`;
    const slow = new MysqlDriver({ uri: proxied.toString(), cancelGraceMs: 300 });
    try {
      const connection = await connect(slow);
      const threadId = await threadIdOf(connection);
      const marker = `sluice_mysql_stuck_${Date.now()}`;
      const controller = new AbortController();
      const reason = new Error('deadline');
      const running = connection.run(`SELECT SLEEP(10) /* ${marker} */`, [], { signal: controller.signal }).catch((e: unknown) => e);
      await expect.poll(() => runningStatements(marker), { timeout: 5_000 }).toBe(1);
      // The server's answers on this connection no longer arrive (the control connection is another).
      proxy.stall(0);
      controller.abort(reason);
      expect(await running).toBe(reason);
      expect(connection.broken).toBe(true);
      await expect.poll(() => runningStatements(marker), { timeout: 5_000 }).toBe(0);
      await expect.poll(async () => (await threadIds()).has(threadId), { timeout: 5_000 }).toBe(false);
      expect(slow.isFatal(await connection.run('SELECT 1', []).catch((e: unknown) => e))).toBe(true);
      await connection.close();
    } finally {
      await slow.close();
      await proxy.close();
    }
  });

  test('a connection killed by the server while idle is reported broken, not thrown', async () => {
    const connection = await connect(driver);
    const threadId = await threadIdOf(connection);
    const broken = new Promise<unknown>((resolve) => connection.onBroken(resolve));
    await monitor.query(`KILL CONNECTION ${threadId}`);
    const error = await broken;
    expect(error).toBeInstanceOf(ConnectionLostError);
    expect(connection.broken).toBe(true);
    const next = await connection.run('SELECT 1', []).catch((e: unknown) => e);
    expect(driver.isFatal(next)).toBe(true);
    expect(await connection.ping().catch((e: unknown) => driver.isFatal(e))).toBe(true);
    await connection.close();
  });

  test('a connection killed while busy fails only its own statement, as fatal', async () => {
    const connection = await connect(driver);
    const other = await connect(driver);
    const threadId = await threadIdOf(connection);
    const marker = `sluice_mysql_busy_${Date.now()}`;
    const running = connection.run(`SELECT SLEEP(10) /* ${marker} */`, []).catch((e: unknown) => e);
    await expect.poll(() => runningStatements(marker), { timeout: 5_000 }).toBe(1);
    await monitor.query(`KILL CONNECTION ${threadId}`);
    const error = await running;
    expect(driver.isFatal(error)).toBe(true);
    expect((error as ConnectionLostError).code).toBe('CONNECTION_LOST');
    expect(connection.broken).toBe(true);
    // Another connection of the same driver is untouched.
    await other.ping();
    expect((await other.run<{ one: number }>('SELECT 1 AS one', [])).rows).toEqual([{ one: 1 }]);
    await connection.close();
    await other.close();
  });

  test('server errors get stable codes, errno, SQLSTATE and the driver error as cause', async () => {
    const connection = await connect(driver);
    await connection.run('DROP TABLE IF EXISTS sluice_mysql_child, sluice_mysql_parent', []);
    await connection.run('CREATE TABLE sluice_mysql_parent (id INT PRIMARY KEY) ENGINE=InnoDB', []);
    await connection.run(
      'CREATE TABLE sluice_mysql_child (id INT PRIMARY KEY, parent INT, FOREIGN KEY (parent) REFERENCES sluice_mysql_parent (id)) ENGINE=InnoDB',
      [],
    );
    await connection.run('INSERT INTO sluice_mysql_parent VALUES (?)', [1]);
    await connection.run('INSERT INTO sluice_mysql_child VALUES (?, ?)', [1, 1]);

    const duplicate = await connection.run('INSERT INTO sluice_mysql_parent VALUES (?)', [1]).catch((e: unknown) => e);
    expect(duplicate).toBeInstanceOf(UniqueViolationError);
    expect((duplicate as DatabaseError).code).toBe('UNIQUE_VIOLATION');
    expect((duplicate as DatabaseError).errno).toBe(1062);
    expect((duplicate as DatabaseError).sqlState).toBe('23000');
    expect((duplicate as DatabaseError).cause).toMatchObject({ code: 'ER_DUP_ENTRY', errno: 1062 });
    expect(driver.isFatal(duplicate)).toBe(false);

    const orphan = await connection.run('INSERT INTO sluice_mysql_child VALUES (?, ?)', [2, 99]).catch((e: unknown) => e);
    expect(orphan).toBeInstanceOf(ForeignKeyViolationError);
    expect((orphan as DatabaseError).code).toBe('FOREIGN_KEY_VIOLATION');
    expect((orphan as DatabaseError).errno).toBe(1452);

    const referenced = await connection.run('DELETE FROM sluice_mysql_parent WHERE id = ?', [1]).catch((e: unknown) => e);
    expect(referenced).toBeInstanceOf(ForeignKeyViolationError);
    expect((referenced as DatabaseError).errno).toBe(1451);

    const syntax = await connection.run('SELEC 1', []).catch((e: unknown) => e);
    expect(syntax).toBeInstanceOf(DatabaseError);
    expect((syntax as DatabaseError).code).toBe('QUERY_FAILED');
    expect((syntax as DatabaseError).errno).toBe(1064);
    expect((syntax as DatabaseError).sqlState).toBe('42000');
    expect((syntax as DatabaseError).cause).toMatchObject({ code: 'ER_PARSE_ERROR' });
    expect(driver.isFatal(syntax)).toBe(false);

    expect(connection.broken).toBe(false);
    await connection.run('DROP TABLE sluice_mysql_child, sluice_mysql_parent', []);
    await connection.close();
  });

  test('a deadlock is a retryable DeadlockError', async () => {
    const setup = await connect(driver);
    await setup.run('DROP TABLE IF EXISTS sluice_mysql_deadlock', []);
    await setup.run('CREATE TABLE sluice_mysql_deadlock (id INT PRIMARY KEY, n INT) ENGINE=InnoDB', []);
    await setup.run('INSERT INTO sluice_mysql_deadlock VALUES (1, 0), (2, 0)', []);
    const a = await connect(driver);
    const b = await connect(driver);
    const marker = `sluice_mysql_deadlock_${Date.now()}`;
    await a.run('BEGIN', []);
    await b.run('BEGIN', []);
    await a.run('UPDATE sluice_mysql_deadlock SET n = 1 WHERE id = 1', []);
    await b.run('UPDATE sluice_mysql_deadlock SET n = 1 WHERE id = 2', []);
    const waiting = a.run(`UPDATE sluice_mysql_deadlock SET n = 2 WHERE id = 2 /* ${marker} */`, []).then(
      () => 'ok',
      (e: unknown) => e,
    );
    await expect.poll(() => runningStatements(marker), { timeout: 5_000 }).toBe(1);
    const closing = await b.run('UPDATE sluice_mysql_deadlock SET n = 2 WHERE id = 1', []).then(
      () => 'ok',
      (e: unknown) => e,
    );
    const outcomes = [closing, await waiting];
    const victim = outcomes.find((outcome) => outcome !== 'ok');
    expect(victim).toBeInstanceOf(DeadlockError);
    expect((victim as DeadlockError).code).toBe('DEADLOCK');
    expect((victim as DeadlockError).errno).toBe(1213);
    expect((victim as DeadlockError).retryable).toBe(true);
    for (const connection of [a, b]) {
      await connection.reset();
      await connection.close();
    }
    await setup.run('DROP TABLE sluice_mysql_deadlock', []);
    await setup.close();
  });

  test('queries are prepared once per connection, in a bounded cache; other statements go as text', async () => {
    const cached = new MysqlDriver({ uri: url, statementCacheSize: 2 });
    const connection = await connect(cached);
    const counters = async (): Promise<{ prepare: number; execute: number; close: number }> => {
      const { rows } = await connection.run<{ Variable_name: string; Value: string }>(
        "SHOW SESSION STATUS WHERE Variable_name IN ('Com_stmt_prepare', 'Com_stmt_execute', 'Com_stmt_close')",
        [],
      );
      const value = (name: string): number => Number(rows.find((row) => row.Variable_name === name)!.Value);
      return { prepare: value('Com_stmt_prepare'), execute: value('Com_stmt_execute'), close: value('Com_stmt_close') };
    };
    const start = await counters();

    for (const n of [1, 2, 3]) expect((await connection.run<{ n: number }>('SELECT ? AS n', [n])).rows).toEqual([{ n }]);
    const afterOne = await counters();
    expect(afterOne.prepare - start.prepare).toBe(1);
    expect(afterOne.execute - start.execute).toBe(3);

    // A third statement evicts the least recently used one, closed on the server.
    await connection.run('SELECT ? + 1 AS n', [1]);
    await connection.run('SELECT ? + 2 AS n', [1]);
    const afterThree = await counters();
    expect(afterThree.prepare - start.prepare).toBe(3);
    expect(afterThree.close - start.close).toBe(1);

    // Transaction control and SET are sent as text: nothing prepared, nothing executed.
    await connection.run('SET @sluice_x = ?', [1]);
    await connection.run('BEGIN', []);
    await connection.run('ROLLBACK', []);
    const afterText = await counters();
    expect(afterText.prepare).toBe(afterThree.prepare);
    expect(afterText.execute).toBe(afterThree.execute);
    await connection.close();
    await cached.close();
  });

  test('a statement with more parameters than the binary protocol takes (65,535) runs as text', async () => {
    const connection = await connect(driver);
    const values = Array.from({ length: 70_000 }, (_, i) => i);
    const { rows } = await connection.run<{ n: number }>(
      `SELECT COUNT(*) AS n FROM (SELECT 69999 AS v) AS t WHERE v IN (${values.map(() => '?').join(',')})`,
      values,
    );
    expect(rows.map((row) => Number(row.n))).toEqual([1]);
    await connection.close();
  });

  test('statementCacheSize 0 sends every statement as text; a bad size is refused', async () => {
    const text = new MysqlDriver({ uri: url, statementCacheSize: 0 });
    const connection = await connect(text);
    const prepared = async (): Promise<number> => {
      const { rows } = await connection.run<{ Value: string }>("SHOW SESSION STATUS LIKE 'Com_stmt_prepare'", []);
      return Number(rows[0]!.Value);
    };
    const before = await prepared();
    expect((await connection.run<{ n: number }>('SELECT ? AS n', [7])).rows).toEqual([{ n: 7 }]);
    expect(await prepared()).toBe(before);
    await connection.close();
    await text.close();
    expect(() => new MysqlDriver({ uri: url, statementCacheSize: -1 })).toThrow(/statementCacheSize/);
  });

  test('reset() rolls back a transaction left open, and sends nothing when none is', async () => {
    const connection = await connect(driver);
    const rollbacks = async (): Promise<number> => {
      const { rows } = await connection.run<{ Value: string }>("SHOW SESSION STATUS LIKE 'Com_rollback'", []);
      return Number(rows[0]!.Value);
    };
    await connection.run('DROP TABLE IF EXISTS sluice_mysql_reset', []);
    await connection.run('CREATE TABLE sluice_mysql_reset (id INT) ENGINE=InnoDB', []);

    const before = await rollbacks();
    await connection.run('SELECT 1', []);
    await connection.reset();
    expect(await rollbacks()).toBe(before);

    await connection.run('BEGIN', []);
    await connection.run('INSERT INTO sluice_mysql_reset VALUES (?)', [1]);
    await connection.reset();
    expect(await rollbacks()).toBe(before + 1);
    // Counted on the same connection: its own uncommitted row would show there.
    expect(await countOn(connection, 'sluice_mysql_reset')).toBe(0);

    // With autocommit off, any statement opens a transaction.
    await connection.run('SET autocommit = 0', []);
    await connection.run('INSERT INTO sluice_mysql_reset VALUES (?)', [2]);
    await connection.reset();
    await connection.run('SET autocommit = 1', []);
    expect(await countOn(connection, 'sluice_mysql_reset')).toBe(0);

    await connection.run('DROP TABLE sluice_mysql_reset', []);
    await connection.close();
  });

  test('CALL gives its first row set; a transaction a procedure opens is rolled back by reset()', async () => {
    const connection = await connect(driver);
    await connection.run('DROP PROCEDURE IF EXISTS sluice_mysql_proc', []);
    await connection.run('DROP TABLE IF EXISTS sluice_mysql_proc_rows', []);
    await connection.run('CREATE TABLE sluice_mysql_proc_rows (id INT) ENGINE=InnoDB', []);
    await connection.run(
      'CREATE PROCEDURE sluice_mysql_proc(IN v INT) BEGIN START TRANSACTION; INSERT INTO sluice_mysql_proc_rows VALUES (v); SELECT v AS v; END',
      [],
    );
    const result = await connection.run<{ v: number }>('CALL sluice_mysql_proc(?)', [7]);
    expect(result.rows).toEqual([{ v: 7 }]);
    await connection.reset();
    expect(await countOn(connection, 'sluice_mysql_proc_rows')).toBe(0);
    await connection.run('DROP PROCEDURE sluice_mysql_proc', []);
    await connection.run('DROP TABLE sluice_mysql_proc_rows', []);
    await connection.close();
  });

  test('a stream reads from the server only as fast as it is consumed; stopping early kills the rest instead of reading it', async () => {
    const target = new URL(url);
    const proxy = await startCountingProxy(target.hostname, Number(target.port || 3306));
    const proxied = new URL(url);
    proxied.host = `127.0.0.1:${proxy.port}`;
    const throughProxy = new MysqlDriver({ uri: proxied.toString() });
    try {
      const connection = await connect(throughProxy);
      const marker = `sluice_mysql_stream_slow_${Date.now()}`;
      // 100,000 rows of 4 kB: 400 MB in all, far more than the sockets on the way hold
      // (about 20 MB on Linux over loopback, through the proxy's two connections).
      const total = 100_000 * 4_000;
      const chunks = connection
        .stream!<{ n: number; pad: string }>(`${numbers(5, ", REPEAT('x', 4000) AS pad")} /* ${marker} */`, [], { chunkSize: 10 })
        [Symbol.asyncIterator]();
      const first = await chunks.next();
      expect(first.value).toHaveLength(10);
      // The consumer holds its chunk and asks for no more: wait until nothing more comes.
      let last = -1;
      await expect
        .poll(
          () => {
            const now = proxy.fromServer();
            const still = now === last;
            last = now;
            return still;
          },
          { interval: 250, timeout: 15_000 },
        )
        .toBe(true);
      // Only what the sockets in between hold left the server: a small part of the result.
      expect(proxy.fromServer()).toBeLessThan(total / 4);
      // The statement waits on the client, still running.
      expect(await runningStatements(marker)).toBe(1);

      await chunks.return?.();
      expect(await runningStatements(marker)).toBe(0);
      // Killed, not read to its end.
      expect(proxy.fromServer()).toBeLessThan(total / 4);
      expect(connection.broken).toBe(false);
      expect((await connection.run<{ one: number }>('SELECT 1 AS one', [])).rows).toEqual([{ one: 1 }]);
      await connection.close();
    } finally {
      await throughProxy.close();
      await proxy.close();
    }
  });

  test('an error part way through a stream comes after the rows before it, translated; the connection stays usable', async () => {
    const connection = await connect(driver);
    // "Subquery returns more than 1 row", raised when the server reaches row 500.
    const { rows, error } = await drain(
      connection.stream!<{ n: number }>(
        `SELECT t.n, IF(t.n = 500, (SELECT 1 UNION ALL SELECT 2), t.n) AS v FROM (${numbers(3)}) AS t ORDER BY t.n`,
        [],
        { chunkSize: 10 },
      ),
    );
    expect(error).toBeInstanceOf(DatabaseError);
    expect(error).toMatchObject({ code: 'QUERY_FAILED', errno: 1242 });
    expect(rows.length).toBeLessThan(500);
    expect(rows.map((row) => Number(row.n))).toEqual(Array.from({ length: rows.length }, (_, i) => i + 1));
    expect(connection.broken).toBe(false);
    expect((await connection.run<{ one: number }>('SELECT 1 AS one', [])).rows).toEqual([{ one: 1 }]);
    await connection.close();
  });

  test('a streamed CALL gives its first row set only; a transaction it leaves open is rolled back by reset()', async () => {
    const connection = await connect(driver);
    await connection.run('DROP PROCEDURE IF EXISTS sluice_mysql_stream_proc', []);
    await connection.run('DROP TABLE IF EXISTS sluice_mysql_stream_proc_rows', []);
    await connection.run('CREATE TABLE sluice_mysql_stream_proc_rows (id INT) ENGINE=InnoDB', []);
    await connection.run(
      "CREATE PROCEDURE sluice_mysql_stream_proc(IN v INT) BEGIN START TRANSACTION; INSERT INTO sluice_mysql_stream_proc_rows VALUES (v); SELECT v AS v; SELECT 'other' AS w; END",
      [],
    );
    // Autocommit is on, and known to be: only the OK packet ending the CALL tells of the transaction.
    const { rows, error } = await drain(connection.stream!<{ v: number }>('CALL sluice_mysql_stream_proc(?)', [7], { chunkSize: 10 }));
    expect(error).toBeUndefined();
    expect(rows).toEqual([{ v: 7 }]);
    await connection.reset();
    expect(await countOn(connection, 'sluice_mysql_stream_proc_rows')).toBe(0);
    await connection.run('DROP PROCEDURE sluice_mysql_stream_proc', []);
    await connection.run('DROP TABLE sluice_mysql_stream_proc_rows', []);
    await connection.close();
  });

  test('a connection killed during a stream fails it as fatal, and is broken', async () => {
    const connection = await connect(driver);
    const threadId = await threadIdOf(connection);
    const chunks = connection.stream!(`${numbers(5, ", REPEAT('x', 1000) AS pad")}`, [], { chunkSize: 100 })[Symbol.asyncIterator]();
    expect((await chunks.next()).value).toHaveLength(100);
    await monitor.query(`KILL CONNECTION ${threadId}`);
    const { error } = await drain({ [Symbol.asyncIterator]: () => chunks });
    expect(driver.isFatal(error)).toBe(true);
    expect((error as ConnectionLostError).code).toBe('CONNECTION_LOST');
    expect(connection.broken).toBe(true);
    await connection.close();
  });

  test('a stream honours an already aborted signal and refuses a bad chunkSize, sending nothing', async () => {
    const connection = await connect(driver);
    const reason = new Error('gone before it started');
    await expect(drain(connection.stream!('SELECT 1', [], { chunkSize: 10, signal: AbortSignal.abort(reason) }))).resolves.toEqual({
      rows: [],
      error: reason,
    });
    const { error } = await drain(connection.stream!('SELECT 1', [], { chunkSize: 0 }));
    expect((error as Error).message).toMatch(/chunkSize/);
    expect(connection.broken).toBe(false);
    expect((await connection.run<{ one: number }>('SELECT 1 AS one', [])).rows).toEqual([{ one: 1 }]);
    await connection.close();
  });

  test('ping answers, and honours an aborted signal', async () => {
    const connection = await connect(driver);
    await connection.ping();
    await connection.ping({ signal: new AbortController().signal });
    const reason = new Error('stop');
    await expect(connection.ping({ signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
    expect(connection.broken).toBe(false);
    await connection.close();
    expect(connection.broken).toBe(true);
  });

  test('an unknown database fails fast with UNKNOWN_DATABASE, marked permanent', async () => {
    const target = new URL(url);
    target.pathname = '/sluice_mysql_no_such_database';
    const error = await connect(new MysqlDriver({ uri: target.toString() })).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConnectionError);
    expect((error as ConnectionError).code).toBe('UNKNOWN_DATABASE');
    expect((error as ConnectionError).permanent).toBe(true);
    expect((error as ConnectionError).errno).toBe(1049);
  });

  test('a wrong password fails fast with AUTH_FAILED, marked permanent, and names no secret', async () => {
    const target = new URL(url);
    target.username = 'sluice_mysql_nobody';
    target.password = 'hunter2';
    const error = await connect(new MysqlDriver({ uri: target.toString() })).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConnectionError);
    expect((error as ConnectionError).code).toBe('AUTH_FAILED');
    expect((error as ConnectionError).permanent).toBe(true);
    expect((error as ConnectionError).errno).toBe(1045);
    expect((error as Error).message).not.toContain('hunter2');
  });

  test('a refused connection is CONNECTION_FAILED, transient, and names no secret', async () => {
    const error = await connect(new MysqlDriver({ uri: 'mysql://app:hunter2@127.0.0.1:1/orders' })).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConnectionError);
    expect((error as ConnectionError).code).toBe('CONNECTION_FAILED');
    expect((error as ConnectionError).permanent).toBe(false);
    expect((error as Error).message).not.toContain('hunter2');
    expect((error as Error).message).not.toContain('mysql://');
    expect((error as Error).message).toContain('127.0.0.1:1/orders');
  });

  test('connect() honours its signal: an abort rejects with the reason and drops the half-open connection', async () => {
    // A server that accepts TCP connections and never says hello.
    const accepted: Socket[] = [];
    const silent = createServer((socket) => accepted.push(socket));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const port = (silent.address() as { port: number }).port;
    try {
      const quiet = new MysqlDriver({ host: '127.0.0.1', port, user: 'app', password: 'hunter2', database: 'orders' });
      const controller = new AbortController();
      const reason = new Error('pool closing');
      const connecting = quiet.connect({ signal: controller.signal });
      await expect.poll(() => accepted.length, { timeout: 5_000 }).toBe(1);
      const closed = new Promise<void>((resolve) => accepted[0]!.once('close', () => resolve()));
      controller.abort(reason);
      await expect(connecting).rejects.toBe(reason);
      await closed; // the client side hung up
      await expect(quiet.connect({ signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
      await quiet.close();
    } finally {
      for (const socket of accepted) socket.destroy();
      await new Promise<void>((resolve) => silent.close(() => resolve()));
    }
  });

  test('driver.close() closes its control connection', async () => {
    // Through the proxy, each connection is known by the port the server sees it from.
    const target = new URL(url);
    const proxy = await startProxy(target.hostname, Number(target.port || 3306));
    const proxied = new URL(url);
    proxied.host = `127.0.0.1:${proxy.port}`;
    const own = new MysqlDriver({ uri: proxied.toString() });
    try {
      const connection = await connect(own);
      const fromPort = async (port: number | undefined): Promise<number> => {
        const [rows] = await monitor.query<mysql.RowDataPacket[]>(
          'SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE HOST LIKE ?',
          [`%:${port}`],
        );
        return Number(rows[0]!.n);
      };
      expect(await fromPort(proxy.upstreamPort(0))).toBe(1);
      expect(proxy.upstreamPort(1)).toBeUndefined();
      // A cancel opens the control connection: the proxy's second link.
      const marker = `sluice_mysql_control_${Date.now()}`;
      const controller = new AbortController();
      const reason = new Error('stop');
      const running = connection.run(`SELECT SLEEP(10) /* ${marker} */`, [], { signal: controller.signal });
      await expect.poll(() => runningStatements(marker), { timeout: 5_000 }).toBe(1);
      controller.abort(reason);
      await expect(running).rejects.toBe(reason);
      const controlPort = proxy.upstreamPort(1);
      expect(controlPort).toBeDefined();
      expect(await fromPort(controlPort)).toBe(1);
      // A second cancel reuses it.
      const again = new AbortController();
      const second = connection.run(`SELECT SLEEP(10) /* ${marker}_2 */`, [], { signal: again.signal });
      await expect.poll(() => runningStatements(`${marker}_2`), { timeout: 5_000 }).toBe(1);
      again.abort(reason);
      await expect(second).rejects.toBe(reason);
      expect(proxy.upstreamPort(2)).toBeUndefined();

      // The server kills the control connection: no crash, and the next cancel opens another.
      const [control] = await monitor.query<mysql.RowDataPacket[]>(
        'SELECT ID AS id FROM information_schema.PROCESSLIST WHERE HOST LIKE ?',
        [`%:${controlPort}`],
      );
      await monitor.query(`KILL CONNECTION ${Number(control[0]!.id)}`);
      await expect.poll(() => fromPort(controlPort), { timeout: 5_000 }).toBe(0);
      const third = new AbortController();
      const killedAgain = connection.run(`SELECT SLEEP(10) /* ${marker}_3 */`, [], { signal: third.signal });
      await expect.poll(() => runningStatements(`${marker}_3`), { timeout: 5_000 }).toBe(1);
      third.abort(reason);
      await expect(killedAgain).rejects.toBe(reason);
      expect(await runningStatements(`${marker}_3`)).toBe(0);
      expect(connection.broken).toBe(false);
      const reopenedPort = proxy.upstreamPort(2);
      expect(reopenedPort).toBeDefined();
      expect(await fromPort(reopenedPort)).toBe(1);

      await connection.close();
      await own.close();
      await expect.poll(() => fromPort(reopenedPort), { timeout: 5_000 }).toBe(0);
      await expect.poll(() => fromPort(proxy.upstreamPort(0)), { timeout: 5_000 }).toBe(0);
    } finally {
      await own.close();
      await proxy.close();
    }
  });

  test('a process whose driver has cancelled a statement exits on its own after close()', async () => {
    const driverModule = fileURLToPath(new URL('../../src/drivers/mysql/mysql-driver.ts', import.meta.url));
    const script = `
      const { MysqlDriver } = await import(${JSON.stringify(driverModule)});
      const driver = new MysqlDriver({ uri: ${JSON.stringify(url)} });
      const connection = await driver.connect({ signal: new AbortController().signal });
      const reason = new Error('stop');
      const signal = AbortSignal.timeout(300);
      const outcome = await connection.run('SELECT SLEEP(10)', [], { signal }).then(() => 'finished', (e) => e === signal.reason ? 'aborted' : String(e));
      await connection.close();
      await driver.close();
      console.log(outcome);
    `;
    // A control connection left open would keep the child alive until the guard kills it.
    const { code, signal, stdout, stderr } = await runNode(['--input-type=module', '-e', script]);
    expect({ code, signal, stderr }).toEqual({ code: 0, signal: null, stderr: '' });
    expect(stdout.trim()).toBe('aborted');
  });
});
