/**
 * Faults made for real between sluice and a real PostgreSQL: a TCP proxy that refuses,
 * stalls or drops connections, and `pg_terminate_backend` from a monitor connection.
 * Nothing is mocked; no assertion is about how long something took.
 */
import { sql } from 'kysely';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, inject, test } from 'vitest';
import { ConnectionError, ConnectionLostError, QueryTimeoutError } from '../../src/drivers/errors.js';
import type { DriverConnection } from '../../src/drivers/driver.js';
import { PostgresDriver } from '../../src/drivers/postgres/postgres-driver.js';
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

const url = inject('backends').postgres;

type DB = Record<string, never>;

/** The injected URL with its host and port swapped for the proxy's (and, optionally, a password). */
const viaProxy = (proxy: TcpProxy, password?: string): string => viaProxyTo(url, proxy, password);

describe.skipIf(url === '')('faults between sluice and a real PostgreSQL', () => {
  const target = url === '' ? { host: '127.0.0.1', port: 5432 } : targetOf(url, 5432);
  /** A connection outside the code under test, to watch and kill backends. */
  let monitor: pg.Client;
  const cleanups: Array<() => Promise<void>> = [];

  async function startProxy(): Promise<TcpProxy> {
    const proxy = await TcpProxy.start(target.host, target.port);
    cleanups.push(() => proxy.close());
    return proxy;
  }

  function open(databaseUrl: string, max: number, closeTimeoutMs?: number, cancelGraceMs?: number): Database<DB> {
    const database = connect<DB>(databaseUrl, {
      pool: { max, ...(closeTimeoutMs !== undefined ? { closeTimeoutMs } : {}) },
      ...(cancelGraceMs !== undefined ? { cancelGraceMs } : {}),
    });
    cleanups.push(() => database.close());
    return database;
  }

  /** The server-side client port (the proxy's upstream port) of the backend running `marker`. */
  async function clientPortRunning(marker: string): Promise<number | undefined> {
    const { rows } = await monitor.query<{ client_port: number }>(
      "SELECT client_port FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1 AND pid <> pg_backend_pid()",
      [`%${marker}%`],
    );
    return rows[0]?.client_port;
  }

  beforeAll(async () => {
    monitor = new pg.Client({ connectionString: url });
    await monitor.connect();
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
    const password = new URL(url).password || 'Sluice-Secret-Pw-7c1';
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

  test('a network stall during a query: the deadline rejects the caller at once, the connection is destroyed after the grace period, and the pool heals', async () => {
    const proxy = await startProxy();
    // A long grace period: the caller must not wait for it.
    const cancelGraceMs = 4_000;
    const database = open(viaProxy(proxy), 2, undefined, cancelGraceMs);
    const destroyed = recordDestroys(database);
    const created: DriverConnection[] = [];
    database.pool.on('create', ({ resource }) => created.push(resource));

    expect((await sql<{ one: number }>`SELECT 1 AS one`.execute(database.db)).rows).toEqual([{ one: 1 }]);
    expect(proxy.openConnections).toBe(1);
    const stalledConnection = created[0];

    proxy.setMode('stall');
    // A liveness bound well under the grace period, not a timing measurement.
    const outcome = await settledWithin(
      database.withDeadline({ timeoutMs: 300 }, () => sql`SELECT 2 AS two`.execute(database.db)),
      cancelGraceMs / 2,
    );
    expect(outcome.settled, 'the caller waited for the cancel grace period').toBe(true);
    expect(outcome).toMatchObject({ ok: false, error: expect.any(QueryTimeoutError) });
    // Still checked out while its cancel cannot reach the server...
    expect(database.stats().inUse).toBe(1);
    // ...then, its state unknown, destroyed, never handed out again.
    expect(await eventually(() => database.stats().inUse === 0, 3 * cancelGraceMs)).toBe(true);
    expect(destroyed.map((event) => event.resource)).toContain(stalledConnection);

    proxy.setMode('pass');
    const healed = await sql<{ three: number }>`SELECT 3 AS three`.execute(database.db);
    expect(healed.rows).toEqual([{ three: 3 }]);
    expect(database.stats()).toMatchObject({ inUse: 0 });
    expect(database.stats().idle).toBeGreaterThan(0);
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
    const victimMarker = `sluice_drop_victim_${process.pid}_${Date.now()}`;
    const survivorMarker = `sluice_drop_survivor_${process.pid}_${Date.now()}`;
    try {
      const proxy = await startProxy();
      const database = open(viaProxy(proxy), 2);
      const destroyed = recordDestroys(database);

      const victim = outcomeOf(sql`SELECT pg_sleep(30) /* ${sql.raw(victimMarker)} */`.execute(database.db));
      let victimPort: number | undefined;
      expect(await eventually(async () => (victimPort = await clientPortRunning(victimMarker)) !== undefined)).toBe(true);
      const survivor = outcomeOf(
        sql<{ answer: number }>`SELECT 42 AS answer FROM pg_sleep(0.3) /* ${sql.raw(survivorMarker)} */`.execute(database.db),
      );
      // Both run at once, on two connections.
      expect(await eventually(async () => (await clientPortRunning(survivorMarker)) !== undefined)).toBe(true);
      expect(database.stats()).toMatchObject({ size: 2, inUse: 2 });
      expect(proxy.openConnections).toBe(2);

      expect(proxy.drop((connection) => connection.upstreamPort === victimPort)).toBe(1);

      const lost = await victim;
      expect(lost.ok).toBe(false);
      const error = (lost as { error: unknown }).error;
      expect(error).toBeInstanceOf(ConnectionLostError);
      expect(error).toMatchObject({ code: 'CONNECTION_LOST' });
      expect(new PostgresDriver({ connectionString: url }).isFatal(error)).toBe(true);
      // The server would run the orphaned statement for its full 30 s (pg_sleep does not
      // notice a dropped client): the driver cancels it from outside.
      expect(await eventually(async () => (await clientPortRunning(victimMarker)) === undefined)).toBe(true);

      const survived = await survivor;
      expect(survived).toEqual({ ok: true, value: expect.objectContaining({ rows: [{ answer: 42 }] }) });

      // The broken connection was destroyed, not given back; the other one was kept.
      expect(destroyed.map((event) => event.reason)).toEqual(['destroyed']);
      expect(database.stats()).toMatchObject({ size: 1, idle: 1, inUse: 0 });

      const healed = await Promise.all(
        [1, 2].map((n) => sql<{ n: number }>`SELECT ${n}::int AS n FROM pg_sleep(0.05)`.execute(database.db)),
      );
      expect(healed.map((result) => result.rows)).toEqual([[{ n: 1 }], [{ n: 2 }]]);
      expect(database.stats()).toMatchObject({ size: 2, inUse: 0 });

      await settleEventLoop();
      expect(watcher.seen).toEqual([]);
    } finally {
      watcher.stop();
      // The server does not notice a dropped client during pg_sleep: end the orphan now.
      await monitor.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE $1 AND pid <> pg_backend_pid()', [
        `%${victimMarker}%`,
      ]);
    }
  });

  test('backends killed by the server while idle are evicted, and the next queries succeed', async () => {
    const watcher = watchProcess();
    try {
      const database = open(url, 3);
      const destroyed = recordDestroys(database);

      const pidsOf = async (): Promise<number[]> => {
        const results = await Promise.all(
          [0, 1, 2].map(() => sql<{ pid: number }>`SELECT pg_backend_pid() AS pid FROM pg_sleep(0.05)`.execute(database.db)),
        );
        return results.map((result) => result.rows[0]!.pid);
      };
      const before = await pidsOf();
      expect(new Set(before).size).toBe(3);
      expect(database.stats()).toMatchObject({ size: 3, idle: 3, inUse: 0 });

      const { rows } = await monitor.query<{ killed: boolean }>(
        'SELECT pg_terminate_backend(pid) AS killed FROM unnest($1::int[]) AS pid',
        [before],
      );
      expect(rows).toEqual([{ killed: true }, { killed: true }, { killed: true }]);

      expect(await eventually(() => destroyed.length === 3)).toBe(true);
      expect(destroyed.map((event) => event.reason)).toEqual(['evicted', 'evicted', 'evicted']);
      expect(database.stats()).toMatchObject({ size: 0, idle: 0, inUse: 0 });

      const after = await pidsOf();
      expect(new Set(after).size).toBe(3);
      for (const pid of after) expect(before).not.toContain(pid);
      expect(database.stats()).toMatchObject({ size: 3, inUse: 0 });

      await settleEventLoop();
      expect(watcher.seen).toEqual([]);
    } finally {
      watcher.stop();
    }
  });

  test('database.close() leaves no socket open, on the client or the server', async () => {
    const proxy = await startProxy();
    const database = connect<DB>(viaProxy(proxy), { pool: { max: 3 } });

    await Promise.all([0, 1, 2].map(() => sql`SELECT pg_sleep(0.05)`.execute(database.db)));
    expect(proxy.openConnections).toBe(3);
    expect(liveSocketsTo(proxy.port)).toBe(3);
    const serverPorts = proxy.connections.map((connection) => connection.upstreamPort);
    expect(serverPorts.every((port) => port !== undefined)).toBe(true);

    await database.close();
    expect(database.stats()).toMatchObject({ size: 0, closed: true });
    expect(liveSocketsTo(proxy.port)).toBe(0);
    expect(await eventually(() => proxy.openConnections === 0)).toBe(true);
    // Nor does the server keep their backends.
    const gone = await eventually(async () => {
      const { rows } = await monitor.query<{ n: number }>(
        'SELECT count(*)::int AS n FROM pg_stat_activity WHERE client_addr IS NOT NULL AND client_port = ANY($1::int[])',
        [serverPorts],
      );
      return rows[0]!.n === 0;
    });
    expect(gone).toBe(true);

    // And the proxy itself leaves nothing behind.
    await proxy.close();
    expect(await isListening('127.0.0.1', proxy.port, 500)).toBe(false);
  });

  test('database.close() with an idle connection on a stalled network still leaves no socket', async () => {
    const proxy = await startProxy();
    const database = open(viaProxy(proxy), 2, 300);
    const closeErrors: unknown[] = [];
    database.pool.on('error', ({ error, phase }) => {
      if (phase === 'close') closeErrors.push(error);
    });

    await sql`SELECT 1`.execute(database.db);
    expect(liveSocketsTo(proxy.port)).toBe(1);
    proxy.setMode('stall');

    await database.close();
    // The server cannot answer a goodbye: the socket must go anyway, not wait for it.
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
    expect.soft((error as PoolTimeoutError).reason).not.toBe('exhausted');
    expect(database.stats()).toMatchObject({ size: 0, inUse: 0 });
    expect(liveSocketsTo(proxy.port)).toBe(1); // the connect still in progress

    await database.close();
    expect(await eventually(() => liveSocketsTo(proxy.port) === 0, 1_000)).toBe(true);
  });
});
