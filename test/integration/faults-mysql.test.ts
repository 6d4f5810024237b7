/**
 * Faults made for real between sluice and a real MySQL/MariaDB: a TCP proxy that refuses,
 * stalls or drops connections, and `KILL CONNECTION` from a monitor connection. The driver's
 * control connection (the one that sends `KILL QUERY`) goes through the same proxy as the
 * pool's, so it is stalled, dropped and counted with them. Nothing is mocked; no assertion
 * is about how long something took.
 */
import { type RawBuilder, sql } from 'kysely';
import mysql from 'mysql2/promise';
import { afterAll, afterEach, beforeAll, describe, expect, inject, test } from 'vitest';
import type { DriverConnection } from '../../src/drivers/driver.js';
import { ConnectionError, ConnectionLostError, QueryTimeoutError } from '../../src/drivers/errors.js';
import { MysqlDriver } from '../../src/drivers/mysql/mysql-driver.js';
import { SluiceError } from '../../src/errors.js';
import { connect, type Database } from '../../src/orm/connect.js';
import { PoolTimeoutError } from '../../src/pool/errors.js';
import { isListening } from './backends.js';
import {
  eventually,
  liveSocketsTo,
  outcomeOf,
  recordDestroys,
  settledWithin,
  settleEventLoop,
  targetOf,
  viaProxy as viaProxyTo,
  watchProcess,
} from './fault-helpers.js';
import { TcpProxy } from './tcp-proxy.js';

const url = inject('backends').mysql;

type DB = Record<string, never>;

/**
 * How long a cancel waits for the server before giving up on the connection. Short, so that
 * a cancel that cannot reach the server (a stalled network) gives up fast; the default is 2 s.
 */
const CANCEL_GRACE_MS = 300;

/** How long a network outage lasts in the stall tests: longer than any one cancel attempt. */
const OUTAGE_MS = 3 * CANCEL_GRACE_MS;

/** The injected URL with its host and port swapped for the proxy's (and, optionally, a password). */
const viaProxy = (proxy: TcpProxy, password?: string): string => viaProxyTo(url, proxy, password);

/** The client port in a PROCESSLIST `HOST` (`127.0.0.1:54321`): the proxy's upstream port. */
function portOf(host: unknown): number | undefined {
  const match = /:(\d+)$/.exec(String(host));
  return match === null ? undefined : Number(match[1]);
}

/**
 * A statement that runs until killed and, unlike SLEEP (which MariaDB ends within 5 s of its
 * client closing the connection), never notices that its client is gone.
 */
const busyStatement = (marker: string): RawBuilder<unknown> => sql`SELECT BENCHMARK(100000000000, MD5('sluice')) /* ${sql.raw(marker)} */`;

/** A unique marker to find a statement in PROCESSLIST. */
const markerFor = (name: string): string => `sluice_fault_${name}_${process.pid}_${Date.now()}`;

describe.skipIf(url === '')('faults between sluice and a real MySQL/MariaDB', () => {
  const target = url === '' ? { host: '127.0.0.1', port: 3306 } : targetOf(url, 3306);
  /** A connection outside the code under test, to watch the server and kill its threads. */
  let monitor: mysql.Connection;
  const cleanups: Array<() => Promise<void>> = [];

  async function startProxy(): Promise<TcpProxy> {
    const proxy = await TcpProxy.start(target.host, target.port);
    cleanups.push(() => proxy.close());
    return proxy;
  }

  function open(databaseUrl: string, max: number, closeTimeoutMs?: number): Database<DB> {
    const database = connect<DB>(databaseUrl, {
      cancelGraceMs: CANCEL_GRACE_MS,
      pool: { max, ...(closeTimeoutMs !== undefined ? { closeTimeoutMs } : {}) },
    });
    cleanups.push(() => database.close());
    return database;
  }

  /**
   * The server threads running a statement that contains `marker` (the monitor's own
   * excluded). By INFO, not COMMAND: a prepared statement runs as 'Execute', text as 'Query'.
   */
  async function threadsRunning(marker: string): Promise<Array<{ id: number; port: number | undefined }>> {
    const [rows] = await monitor.query<mysql.RowDataPacket[]>(
      'SELECT ID AS id, HOST AS host FROM information_schema.PROCESSLIST WHERE INFO LIKE ? AND ID <> CONNECTION_ID()',
      [`%${marker}%`],
    );
    return rows.map((row) => ({ id: Number(row.id), port: portOf(row.host) }));
  }

  /** How many server threads there are for clients at these ports (the proxy's upstream ports). */
  async function threadsFrom(ports: ReadonlyArray<number | undefined>): Promise<number> {
    const [rows] = await monitor.query<mysql.RowDataPacket[]>(
      'SELECT HOST AS host FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID()',
    );
    return rows.filter((row) => ports.includes(portOf(row.host))).length;
  }

  async function threadExists(id: number): Promise<boolean> {
    const [rows] = await monitor.query<mysql.RowDataPacket[]>('SELECT 1 FROM information_schema.PROCESSLIST WHERE ID = ?', [id]);
    return rows.length > 0;
  }

  /** Ends a test's leftover statements: the server does not stop them when their client goes. */
  async function killRunning(marker: string): Promise<void> {
    for (const { id } of await threadsRunning(marker)) {
      await monitor.query(`KILL CONNECTION ${id}`).catch(() => {});
    }
  }

  /** Opens the driver's control connection: a deadline makes it send a KILL QUERY. */
  async function openControlConnection(database: Database<DB>): Promise<void> {
    const marker = markerFor('control');
    const outcome = await outcomeOf(
      database.withDeadline({ timeoutMs: 100 }, () => sql`SELECT SLEEP(30) /* ${sql.raw(marker)} */`.execute(database.db)),
    );
    expect(outcome).toMatchObject({ ok: false, error: expect.any(QueryTimeoutError) });
    // The caller does not wait for the KILL; the server lets go of the statement soon after.
    expect(await eventually(async () => (await threadsRunning(marker)).length === 0)).toBe(true);
    expect(await eventually(() => database.stats().inUse === 0)).toBe(true);
  }

  beforeAll(async () => {
    monitor = await mysql.createConnection({ uri: url });
  });
  afterEach(async () => {
    // Databases first (registered after their proxy), then proxies.
    for (let cleanup = cleanups.pop(); cleanup !== undefined; cleanup = cleanups.pop()) await cleanup();
  });
  afterAll(async () => {
    await monitor.end();
  });

  test('an unreachable server: the deadline rejects with POOL_TIMEOUT (create-failed) caused by CONNECTION_FAILED, no password shown', async () => {
    const proxy = await startProxy();
    proxy.setMode('refuse');
    const password = new URL(url).password || 's3cret-pw';
    const proxiedUrl = viaProxy(proxy, password);
    const database = open(proxiedUrl, 2);

    const outcome = await outcomeOf(
      database.withDeadline({ timeoutMs: 300 }, () => sql`SELECT 1 AS one`.execute(database.db)),
    );

    expect(outcome.ok).toBe(false);
    const error = (outcome as { error: unknown }).error;
    expect(error).toBeInstanceOf(PoolTimeoutError);
    expect(error).toMatchObject({ code: 'POOL_TIMEOUT', reason: 'create-failed' });
    const cause = (error as PoolTimeoutError).cause;
    expect(cause).toBeInstanceOf(ConnectionError);
    expect(cause).toMatchObject({ code: 'CONNECTION_FAILED', permanent: false });
    // The pool really tried, through the proxy, and was refused.
    expect(proxy.acceptedConnections).toBeGreaterThan(0);
    expect(database.stats()).toMatchObject({ size: 0, inUse: 0, waiting: 0 });
    const texts = [
      (error as Error).message,
      String((error as Error).stack),
      (cause as Error).message,
      String((cause as Error).stack),
      String(error),
      String(cause),
    ];
    for (const text of texts) {
      expect(text).not.toContain(password);
      expect(text).not.toContain(proxiedUrl);
    }
  });

  test('a network stall during a query: the deadline still rejects the caller, the pool heals, and nothing keeps running on the server', async () => {
    const watcher = watchProcess();
    const marker = markerFor('stall');
    try {
      const proxy = await startProxy();
      const database = open(viaProxy(proxy), 2);
      const destroyed = recordDestroys(database);
      const created: DriverConnection[] = [];
      database.pool.on('create', ({ resource }) => created.push(resource));

      const { rows } = await sql<{ id: number }>`SELECT CONNECTION_ID() AS id`.execute(database.db);
      const threadId = Number(rows[0]!.id);
      // The pool's connection only: the control connection opens on the first cancel.
      expect(proxy.openConnections).toBe(1);
      const stalledConnection = created[0];

      // The deadline is far enough off for the statement to be seen running on the server
      // first: the network stalls while it runs, not before it was sent.
      const caller = settledWithin(
        database.withDeadline({ timeoutMs: 1_000 }, () => busyStatement(marker).execute(database.db)),
        10_000,
      );
      expect(await eventually(async () => (await threadsRunning(marker)).length === 1, 900)).toBe(true);
      // The cancel cannot reach the server either: its control connection never opens.
      proxy.setMode('stall');
      const outcome = await caller;
      expect(outcome.settled, 'the caller was left hanging on a stalled network').toBe(true);
      expect(outcome).toMatchObject({ ok: false, error: expect.any(QueryTimeoutError) });
      expect((outcome as { error: SluiceError }).error.code).toBe('QUERY_TIMEOUT');
      // Checked out until the cancel gives up (cancelGraceMs); then, its state unknown, the
      // connection is destroyed, never handed out again.
      expect(await eventually(() => database.stats().inUse === 0)).toBe(true);
      expect(destroyed.map((event) => event.resource)).toContain(stalledConnection);

      // The outage outlasts the driver's attempts to kill the abandoned connection (each
      // bounded by cancelGraceMs), and ends while none is under way.
      await new Promise((resolve) => setTimeout(resolve, OUTAGE_MS));
      expect(await eventually(() => liveSocketsTo(proxy.port) === 0)).toBe(true);
      proxy.setMode('pass');

      const healed = await sql<{ three: number }>`SELECT 3 AS three`.execute(database.db);
      expect(healed.rows).toEqual([{ three: 3 }]);
      expect(database.stats()).toMatchObject({ inUse: 0 });
      expect(database.stats().idle).toBeGreaterThan(0);

      // The abandoned connection is killed on the server once it can be reached: the
      // statement does not run on, for the server does not notice that its client is gone.
      const gone = await eventually(async () => !(await threadExists(threadId)) && (await threadsRunning(marker)).length === 0);
      expect(gone, 'the abandoned statement kept running on the server').toBe(true);

      await settleEventLoop();
      expect(watcher.seen).toEqual([]);
    } finally {
      watcher.stop();
      await killRunning(marker);
    }
  });

  test('a stall with the control connection open: the stuck cancel does not hold the caller, and cancels work again once the network is back', async () => {
    const watcher = watchProcess();
    const marker = markerFor('stalled_control');
    try {
      const proxy = await startProxy();
      const database = open(viaProxy(proxy), 2);
      await openControlConnection(database);
      const { rows } = await sql<{ id: number }>`SELECT CONNECTION_ID() AS id`.execute(database.db);
      const threadId = Number(rows[0]!.id);
      // The pool's connection and the control connection.
      expect(proxy.openConnections).toBe(2);
      expect(liveSocketsTo(proxy.port)).toBe(2);

      proxy.setMode('stall');
      // The KILL QUERY goes out on an open control connection that never answers: the
      // caller is still released (after the deadline and cancelGraceMs), not held by it.
      const outcome = await settledWithin(
        database.withDeadline({ timeoutMs: 300 }, () => busyStatement(marker).execute(database.db)),
        10_000,
      );
      expect(outcome.settled, 'a stalled control connection held the caller').toBe(true);
      expect(outcome).toMatchObject({ ok: false, error: expect.any(QueryTimeoutError) });
      expect(await eventually(() => database.stats().size === 0)).toBe(true);
      expect(database.stats()).toMatchObject({ size: 0, inUse: 0 });

      await new Promise((resolve) => setTimeout(resolve, OUTAGE_MS));
      expect(await eventually(() => liveSocketsTo(proxy.port) === 0)).toBe(true);
      proxy.setMode('pass');

      // The stuck control connection was let go: a new one delivers the next cancel, and the
      // connection it cancels on stays in the pool.
      const next = markerFor('after_stall');
      const cancelled = await outcomeOf(
        database.withDeadline({ timeoutMs: 300 }, () => sql`SELECT SLEEP(30) /* ${sql.raw(next)} */`.execute(database.db)),
      );
      expect(cancelled).toMatchObject({ ok: false, error: expect.any(QueryTimeoutError) });
      expect(await eventually(async () => (await threadsRunning(next)).length === 0)).toBe(true);
      expect(await eventually(() => database.stats().idle === 1)).toBe(true);
      expect(database.stats()).toMatchObject({ size: 1, idle: 1, inUse: 0 });
      expect((await sql<{ one: number }>`SELECT 1 AS one`.execute(database.db)).rows).toEqual([{ one: 1 }]);
      // Nor does the statement caught in the stall keep running there.
      const gone = await eventually(async () => !(await threadExists(threadId)) && (await threadsRunning(marker)).length === 0);
      expect(gone, 'the abandoned statement kept running on the server').toBe(true);

      await settleEventLoop();
      expect(watcher.seen).toEqual([]);
    } finally {
      watcher.stop();
      await killRunning(marker);
    }
  });

  test('a connection dropped while idle is evicted: the next query succeeds and nothing crashes the process', async () => {
    const watcher = watchProcess();
    try {
      const proxy = await startProxy();
      const database = open(viaProxy(proxy), 2);
      const destroyed = recordDestroys(database);

      await sql`SELECT 1`.execute(database.db);
      expect(database.stats()).toMatchObject({ size: 1, idle: 1, inUse: 0 });

      expect(proxy.drop()).toBe(1);
      expect(await eventually(() => destroyed.some((event) => event.reason === 'evicted'))).toBe(true);
      expect(database.stats()).toMatchObject({ size: 0, idle: 0 });

      const { rows } = await sql<{ two: number }>`SELECT 2 AS two`.execute(database.db);
      expect(rows).toEqual([{ two: 2 }]);
      expect(database.stats()).toMatchObject({ size: 1, inUse: 0 });
      expect(database.stats().totals.created).toBe(2);

      await settleEventLoop();
      expect(watcher.seen).toEqual([]);
    } finally {
      watcher.stop();
    }
  });

  test('a connection dropped while its query runs fails only that query (CONNECTION_LOST, fatal); the pool heals', async () => {
    const watcher = watchProcess();
    const victimMarker = markerFor('drop_victim');
    const survivorMarker = markerFor('drop_survivor');
    try {
      const proxy = await startProxy();
      const database = open(viaProxy(proxy), 2);
      const destroyed = recordDestroys(database);

      const victim = outcomeOf(sql`SELECT SLEEP(5) /* ${sql.raw(victimMarker)} */`.execute(database.db));
      let victimPort: number | undefined;
      expect(await eventually(async () => (victimPort = (await threadsRunning(victimMarker))[0]?.port) !== undefined)).toBe(true);
      const survivor = outcomeOf(
        sql<{ slept: number; answer: number }>`SELECT SLEEP(0.3) AS slept, 42 AS answer /* ${sql.raw(survivorMarker)} */`.execute(
          database.db,
        ),
      );
      // Both run at once, on two connections.
      expect(await eventually(async () => (await threadsRunning(survivorMarker)).length === 1)).toBe(true);
      expect(database.stats()).toMatchObject({ size: 2, inUse: 2 });
      expect(proxy.openConnections).toBe(2);

      expect(proxy.drop((connection) => connection.upstreamPort === victimPort)).toBe(1);

      const lost = await victim;
      expect(lost.ok).toBe(false);
      const error = (lost as { error: unknown }).error;
      expect(error).toBeInstanceOf(ConnectionLostError);
      expect(error).toMatchObject({ code: 'CONNECTION_LOST' });
      expect(new MysqlDriver({ uri: url }).isFatal(error)).toBe(true);

      const survived = await survivor;
      expect(survived).toEqual({ ok: true, value: expect.objectContaining({ rows: [{ slept: 0, answer: 42 }] }) });

      // The broken connection was destroyed, not given back; the other one was kept.
      expect(destroyed.map((event) => event.reason)).toEqual(['destroyed']);
      expect(database.stats()).toMatchObject({ size: 1, idle: 1, inUse: 0 });

      const healed = await Promise.all(
        [1, 2].map((n) => sql<{ n: number; slept: number }>`SELECT ${n} AS n, SLEEP(0.05) AS slept`.execute(database.db)),
      );
      expect(healed.map((result) => result.rows)).toEqual([[{ n: 1, slept: 0 }], [{ n: 2, slept: 0 }]]);
      expect(database.stats()).toMatchObject({ size: 2, inUse: 0 });

      await settleEventLoop();
      expect(watcher.seen).toEqual([]);
    } finally {
      watcher.stop();
      // The server does not notice a dropped client during SLEEP: end the orphan now.
      await killRunning(victimMarker);
    }
  });

  test('connections killed by the server while idle are evicted, and the next queries succeed', async () => {
    const watcher = watchProcess();
    try {
      const database = open(url, 3);
      const destroyed = recordDestroys(database);

      const threadIds = async (): Promise<number[]> => {
        const results = await Promise.all(
          [0, 1, 2].map(() => sql<{ id: number }>`SELECT CONNECTION_ID() AS id, SLEEP(0.05) AS slept`.execute(database.db)),
        );
        return results.map((result) => Number(result.rows[0]!.id));
      };
      const before = await threadIds();
      expect(new Set(before).size).toBe(3);
      expect(database.stats()).toMatchObject({ size: 3, idle: 3, inUse: 0 });

      for (const id of before) await monitor.query(`KILL CONNECTION ${id}`);

      expect(await eventually(() => destroyed.length === 3)).toBe(true);
      expect(destroyed.map((event) => event.reason)).toEqual(['evicted', 'evicted', 'evicted']);
      expect(database.stats()).toMatchObject({ size: 0, idle: 0, inUse: 0 });

      const after = await threadIds();
      expect(new Set(after).size).toBe(3);
      for (const id of after) expect(before).not.toContain(id);
      expect(database.stats()).toMatchObject({ size: 3, inUse: 0 });

      await settleEventLoop();
      expect(watcher.seen).toEqual([]);
    } finally {
      watcher.stop();
    }
  });

  test('a busy connection killed by the server fails only its query (CONNECTION_LOST, fatal); the pool heals', async () => {
    const watcher = watchProcess();
    const victimMarker = markerFor('kill_victim');
    const survivorMarker = markerFor('kill_survivor');
    try {
      const database = open(url, 2);
      const destroyed = recordDestroys(database);

      const victim = outcomeOf(sql`SELECT SLEEP(5) /* ${sql.raw(victimMarker)} */`.execute(database.db));
      let victimId: number | undefined;
      expect(await eventually(async () => (victimId = (await threadsRunning(victimMarker))[0]?.id) !== undefined)).toBe(true);
      const survivor = outcomeOf(
        sql<{ slept: number; answer: number }>`SELECT SLEEP(0.3) AS slept, 42 AS answer /* ${sql.raw(survivorMarker)} */`.execute(
          database.db,
        ),
      );
      expect(await eventually(async () => (await threadsRunning(survivorMarker)).length === 1)).toBe(true);
      expect(database.stats()).toMatchObject({ size: 2, inUse: 2 });

      await monitor.query(`KILL CONNECTION ${victimId!}`);

      const lost = await victim;
      expect(lost.ok).toBe(false);
      const error = (lost as { error: unknown }).error;
      expect(error).toBeInstanceOf(ConnectionLostError);
      expect(error).toMatchObject({ code: 'CONNECTION_LOST' });
      expect(new MysqlDriver({ uri: url }).isFatal(error)).toBe(true);

      const survived = await survivor;
      expect(survived).toEqual({ ok: true, value: expect.objectContaining({ rows: [{ slept: 0, answer: 42 }] }) });

      expect(destroyed.map((event) => event.reason)).toEqual(['destroyed']);
      expect(database.stats()).toMatchObject({ size: 1, idle: 1, inUse: 0 });

      const healed = await Promise.all(
        [1, 2].map((n) => sql<{ n: number; slept: number }>`SELECT ${n} AS n, SLEEP(0.05) AS slept`.execute(database.db)),
      );
      expect(healed.map((result) => result.rows)).toEqual([[{ n: 1, slept: 0 }], [{ n: 2, slept: 0 }]]);
      expect(database.stats()).toMatchObject({ size: 2, inUse: 0 });
      expect(await threadExists(victimId!)).toBe(false);

      await settleEventLoop();
      expect(watcher.seen).toEqual([]);
    } finally {
      watcher.stop();
      await killRunning(victimMarker);
    }
  });

  test('database.close() leaves no socket open, on the client or the server, the control connection included', async () => {
    const proxy = await startProxy();
    const database = connect<DB>(viaProxy(proxy), { cancelGraceMs: CANCEL_GRACE_MS, pool: { max: 3 } });

    await openControlConnection(database);
    await Promise.all([0, 1, 2].map(() => sql`SELECT SLEEP(0.05)`.execute(database.db)));
    // Three pooled connections and the control connection.
    expect(proxy.openConnections).toBe(4);
    expect(liveSocketsTo(proxy.port)).toBe(4);
    const serverPorts = proxy.connections.map((connection) => connection.upstreamPort);
    expect(serverPorts.every((port) => port !== undefined)).toBe(true);
    expect(await threadsFrom(serverPorts)).toBe(4);

    await database.close();
    expect(database.stats()).toMatchObject({ size: 0, closed: true });
    expect(liveSocketsTo(proxy.port)).toBe(0);
    expect(await eventually(() => proxy.openConnections === 0)).toBe(true);
    // Nor does the server keep their threads.
    expect(await eventually(async () => (await threadsFrom(serverPorts)) === 0)).toBe(true);

    // And the proxy itself leaves nothing behind.
    await proxy.close();
    expect(await isListening('127.0.0.1', proxy.port, 500)).toBe(false);
  });

  test('database.close() with an idle connection and the control connection on a stalled network still leaves no socket', async () => {
    const proxy = await startProxy();
    // A close deadline well past cancelGraceMs: a goodbye that waits longer than that is a bug.
    const database = open(viaProxy(proxy), 2, 5_000);
    const closeErrors: unknown[] = [];
    database.pool.on('error', ({ error, phase }) => {
      if (phase === 'close') closeErrors.push(error);
    });

    await openControlConnection(database);
    expect(liveSocketsTo(proxy.port)).toBe(2);
    proxy.setMode('stall');

    // The server cannot answer a goodbye: the sockets must go anyway, not wait for it.
    const closed = await settledWithin(database.close(), 10_000);
    expect(closed, 'close() hung on a stalled network').toEqual({ settled: true, ok: true, value: undefined });
    expect(await eventually(() => liveSocketsTo(proxy.port) === 0, 1_000)).toBe(true);
    expect(closeErrors).toEqual([]);
  });

  test('a server that accepts but never answers: POOL_TIMEOUT not blamed on exhaustion, and close() leaves no socket', async () => {
    const proxy = await startProxy();
    proxy.setMode('stall');
    const database = open(viaProxy(proxy), 2, 300);

    const outcome = await outcomeOf(
      database.withDeadline({ timeoutMs: 300 }, () => sql`SELECT 1 AS one`.execute(database.db)),
    );
    expect(outcome.ok).toBe(false);
    const error = (outcome as { error: unknown }).error;
    expect(error).toBeInstanceOf(PoolTimeoutError);
    expect(error).toMatchObject({ code: 'POOL_TIMEOUT' });
    // Nothing is in use and there is room to grow: the pool is not exhausted, the database is not answering.
    expect((error as PoolTimeoutError).reason).toBe('create-pending');
    expect(database.stats()).toMatchObject({ size: 0, inUse: 0 });
    expect(liveSocketsTo(proxy.port)).toBe(1); // the connect still in progress (the handshake never comes)

    await database.close();
    expect(await eventually(() => liveSocketsTo(proxy.port) === 0, 1_000)).toBe(true);
  });
});
