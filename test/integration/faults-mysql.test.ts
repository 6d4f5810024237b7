/**
 * Faults made for real between sluice and a real MySQL/MariaDB: a TCP proxy that refuses,
 * stalls or drops connections, and `KILL CONNECTION` from a monitor connection. The driver's
 * control connection (the one that sends `KILL QUERY`) goes through the same proxy as the
 * pool's, so it is stalled, dropped and counted with them. The scenarios PostgreSQL shares
 * are in fault-scenarios.ts, run here against MySQL. Nothing is mocked; no assertion is about
 * how long something took.
 */
import { type RawBuilder, sql } from 'kysely';
import mysql from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { testServerUrl } from 'sluice/testing/vitest';
import type { DriverConnection } from '../../src/drivers/driver.js';
import { QueryTimeoutError } from '../../src/drivers/errors.js';
import { MysqlDriver } from '../../src/drivers/mysql/mysql-driver.js';
import { SluiceError } from '../../src/errors.js';
import type { Database } from '../../src/orm/connect.js';
import { eventually, liveSocketsTo, outcomeOf, recordDestroys, settledWithin } from './fault-helpers.js';
import { type DB, type ExtraConnections, faultScenarios, type FaultBackend, markerFor, type ServerThread } from './fault-scenarios.js';
import type { TcpProxy } from './tcp-proxy.js';

const url = testServerUrl('mysql') ?? '';

/**
 * How long a cancel waits for the server before giving up on the connection. Short, so that
 * a cancel that cannot reach the server (a stalled network) gives up fast; the default is 2 s.
 */
const CANCEL_GRACE_MS = 300;

/** How long a network outage lasts in the stall tests: longer than any one cancel attempt. */
const OUTAGE_MS = 3 * CANCEL_GRACE_MS;

/** The client port in a PROCESSLIST `HOST` (`127.0.0.1:54321`): the proxy's upstream port. */
function portOf(host: unknown): number | undefined {
  const match = /:(\d+)$/.exec(String(host));
  return match === null ? undefined : Number(match[1]);
}

/** A comment that marks a statement, to find it in PROCESSLIST. */
const marked = (marker?: string): RawBuilder<unknown> => sql.raw(marker === undefined ? '' : ` /* ${marker} */`);

/**
 * A statement that runs until killed and, unlike SLEEP (which MariaDB ends within 5 s of its
 * client closing the connection), never notices that its client is gone.
 */
const busyStatement = (marker: string): RawBuilder<unknown> => sql`SELECT BENCHMARK(100000000000, MD5('sluice'))${marked(marker)}`;

describe.skipIf(url === '')('faults between sluice and a real MySQL/MariaDB', () => {
  /** A connection outside the code under test, to watch the server and kill its threads. */
  let monitor: mysql.Connection;

  /**
   * The server threads running a statement that contains `marker` (the monitor's own
   * excluded). By INFO, not COMMAND: a prepared statement runs as 'Execute', text as 'Query'.
   */
  async function threadsRunning(marker: string): Promise<ServerThread[]> {
    const [rows] = await monitor.query<mysql.RowDataPacket[]>(
      'SELECT ID AS id, HOST AS host FROM information_schema.PROCESSLIST WHERE INFO LIKE ? AND ID <> CONNECTION_ID()',
      [`%${marker}%`],
    );
    return rows.map((row) => ({ id: Number(row.id), port: portOf(row.host) }));
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

  const mysqlServer: FaultBackend = {
    url,
    defaultPort: 3306,
    cancelGraceMs: CANCEL_GRACE_MS,
    // The driver does not cancel a lost connection's statement: SLEEP ends it, or killRunning.
    cancelsOrphanedStatements: true,
    running: threadsRunning,
    threadExists,
    /** How many server threads there are for clients at these ports (the proxy's upstream ports). */
    async threadsFrom(ports) {
      const [rows] = await monitor.query<mysql.RowDataPacket[]>(
        'SELECT HOST AS host FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID()',
      );
      return rows.filter((row) => ports.includes(portOf(row.host))).length;
    },
    async killThread(id) {
      await monitor.query(`KILL CONNECTION ${id}`);
    },
    killRunning,
    // BENCHMARK, not SLEEP: MariaDB ends a SLEEP within 5 s of its client going away, which
    // would hide a statement left running.
    victimStatement: (marker) => sql`SELECT BENCHMARK(100000000000, MD5('sluice'))${marked(marker)}`,
    sleepThenSelect: (seconds, n, marker) => ({
      query: sql`SELECT ${n} AS n, SLEEP(${sql.lit(seconds)}) AS slept${marked(marker)}`,
      rows: [{ n, slept: 0 }],
    }),
    threadIdQuery: () => sql<{ id: number }>`SELECT CONNECTION_ID() AS id, SLEEP(0.05) AS slept`,
    isFatal: (error) => new MysqlDriver({ uri: url }).isFatal(error),
  };
  const faults = faultScenarios(mysqlServer);

  /**
   * A SLEEP(30) whose deadline passes: the driver sends a KILL QUERY (over its control
   * connection, which it opens if it has none) and the statement ends on the server.
   */
  async function deadlineKillsSleep(database: Database<DB>, name: string, timeoutMs: number): Promise<void> {
    const marker = markerFor(name);
    const outcome = await outcomeOf(
      database.withDeadline({ timeoutMs }, () => sql`SELECT SLEEP(30)${marked(marker)}`.execute(database.db)),
    );
    expect(outcome).toMatchObject({ ok: false, error: expect.any(QueryTimeoutError) });
    // The caller does not wait for the KILL; the server lets go of the statement soon after.
    expect(await eventually(async () => (await threadsRunning(marker)).length === 0)).toBe(true);
    expect(await eventually(() => database.stats().inUse === 0)).toBe(true);
  }

  /** Opens the driver's control connection: a deadline makes it send a KILL QUERY. */
  const openControlConnection = (database: Database<DB>): Promise<void> => deadlineKillsSleep(database, 'control', 100);

  /** The control connection, for the shared scenarios that count sockets. */
  const controlConnection: ExtraConnections = { open: openControlConnection, count: 1 };

  /** This connection's thread id on the server. */
  async function threadIdOf(database: Database<DB>): Promise<number> {
    const { rows } = await sql<{ id: number }>`SELECT CONNECTION_ID() AS id`.execute(database.db);
    return Number(rows[0]!.id);
  }

  /**
   * Lets the outage outlast the driver's attempts to kill an abandoned connection (each
   * bounded by cancelGraceMs), then ends it while none is under way.
   */
  async function endOutage(proxy: TcpProxy): Promise<void> {
    await new Promise((resolve) => setTimeout(resolve, OUTAGE_MS));
    expect(await eventually(() => liveSocketsTo(proxy.port) === 0)).toBe(true);
    proxy.setMode('pass');
  }

  /** Neither the abandoned connection's thread nor its statement is left on the server. */
  async function expectAbandonedStatementGone(threadId: number, marker: string): Promise<void> {
    const gone = await eventually(async () => !(await threadExists(threadId)) && (await threadsRunning(marker)).length === 0);
    expect(gone, 'the abandoned statement kept running on the server').toBe(true);
  }

  beforeAll(async () => {
    monitor = await mysql.createConnection({ uri: url });
  });
  afterAll(async () => {
    await monitor.end();
  });

  test('an unreachable server: the deadline rejects with POOL_TIMEOUT (create-failed) caused by CONNECTION_FAILED, no password shown', async () => {
    await faults.unreachableServer();
  });

  test('a network stall during a query: the deadline still rejects the caller, the pool heals, and nothing keeps running on the server', async () => {
    const marker = markerFor('stall');
    await faults.withoutCrashes(
      async () => {
        const proxy = await faults.startProxy();
        const database = faults.open(faults.viaProxy(proxy), 2);
        const destroyed = recordDestroys(database);
        const created: DriverConnection[] = [];
        database.pool.on('create', ({ resource }) => created.push(resource));

        const threadId = await threadIdOf(database);
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

        await endOutage(proxy);

        const healed = await sql<{ three: number }>`SELECT 3 AS three`.execute(database.db);
        expect(healed.rows).toEqual([{ three: 3 }]);
        expect(database.stats()).toMatchObject({ inUse: 0 });
        expect(database.stats().idle).toBeGreaterThan(0);

        // The abandoned connection is killed on the server once it can be reached: the
        // statement does not run on, for the server does not notice that its client is gone.
        await expectAbandonedStatementGone(threadId, marker);
      },
      () => killRunning(marker),
    );
  });

  test('a stall with the control connection open: the stuck cancel does not hold the caller, and cancels work again once the network is back', async () => {
    const marker = markerFor('stalled_control');
    await faults.withoutCrashes(
      async () => {
        const proxy = await faults.startProxy();
        const database = faults.open(faults.viaProxy(proxy), 2);
        await openControlConnection(database);
        const threadId = await threadIdOf(database);
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

        await endOutage(proxy);

        // The stuck control connection was let go: a new one delivers the next cancel, and the
        // connection it cancels on stays in the pool.
        await deadlineKillsSleep(database, 'after_stall', 300);
        expect(await eventually(() => database.stats().idle === 1)).toBe(true);
        expect(database.stats()).toMatchObject({ size: 1, idle: 1, inUse: 0 });
        expect((await sql<{ one: number }>`SELECT 1 AS one`.execute(database.db)).rows).toEqual([{ one: 1 }]);
        // Nor does the statement caught in the stall keep running there.
        await expectAbandonedStatementGone(threadId, marker);
      },
      () => killRunning(marker),
    );
  });

  test('a connection dropped while idle is evicted: the next query succeeds and nothing crashes the process', async () => {
    await faults.droppedWhileIdle();
  });

  test('a connection dropped while its query runs fails only that query (CONNECTION_LOST, fatal); the pool heals', async () => {
    await faults.lostWhileRunning('dropped');
  });

  test('connections killed by the server while idle are evicted, and the next queries succeed', async () => {
    await faults.killedWhileIdle();
  });

  test('a busy connection killed by the server fails only its query (CONNECTION_LOST, fatal); the pool heals', async () => {
    await faults.lostWhileRunning('killed');
  });

  test('database.close() leaves no socket open, on the client or the server, the control connection included', async () => {
    await faults.closeLeavesNoSocket(controlConnection);
  });

  test('database.close() with an idle connection and the control connection on a stalled network still leaves no socket', async () => {
    // A close deadline well past cancelGraceMs: a goodbye that waits longer than that is a bug.
    await faults.closeOnStalledNetwork(5_000, controlConnection);
  });

  test('a server that accepts but never answers: POOL_TIMEOUT not blamed on exhaustion, and close() leaves no socket', async () => {
    await faults.acceptsButNeverAnswers();
  });
});
