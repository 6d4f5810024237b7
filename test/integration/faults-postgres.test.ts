/**
 * Faults made for real between sluice and a real PostgreSQL: a TCP proxy that refuses,
 * stalls or drops connections, and `pg_terminate_backend` from a monitor connection.
 * The scenarios MySQL shares are in fault-scenarios.ts, run here against PostgreSQL.
 * Nothing is mocked; no assertion is about how long something took.
 */
import { type RawBuilder, sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { testServerUrl } from 'sluice/testing/vitest';
import type { DriverConnection } from '../../src/drivers/driver.js';
import { QueryTimeoutError } from '../../src/drivers/errors.js';
import { PostgresDriver } from '../../src/drivers/postgres/postgres-driver.js';
import { eventually, recordDestroys, settledWithin } from './fault-helpers.js';
import { faultScenarios, type FaultBackend, type ServerThread } from './fault-scenarios.js';

const url = testServerUrl('postgres') ?? '';

/** A comment that marks a statement, to find it in pg_stat_activity. */
const marked = (marker?: string): RawBuilder<unknown> => sql.raw(marker === undefined ? '' : ` /* ${marker} */`);

describe.skipIf(url === '')('faults between sluice and a real PostgreSQL', () => {
  /** A connection outside the code under test, to watch and kill backends. */
  let monitor: pg.Client;

  /** The backends running `marker` now, with their client ports (the proxy's upstream ports). */
  async function backendsRunning(marker: string): Promise<ServerThread[]> {
    const { rows } = await monitor.query<{ pid: number; client_port: number | null }>(
      "SELECT pid, client_port FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1 AND pid <> pg_backend_pid()",
      [`%${marker}%`],
    );
    return rows.map((row) => ({ id: row.pid, port: row.client_port ?? undefined }));
  }

  const postgres: FaultBackend = {
    url,
    defaultPort: 5432,
    cancelsOrphanedStatements: true,
    running: backendsRunning,
    async threadExists(pid) {
      const { rows } = await monitor.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [pid]);
      return rows.length > 0;
    },
    async threadsFrom(ports) {
      const { rows } = await monitor.query<{ n: number }>(
        'SELECT count(*)::int AS n FROM pg_stat_activity WHERE client_addr IS NOT NULL AND client_port = ANY($1::int[])',
        [ports],
      );
      return rows[0]!.n;
    },
    async killThread(pid) {
      const { rows } = await monitor.query<{ killed: boolean }>('SELECT pg_terminate_backend($1) AS killed', [pid]);
      expect(rows).toEqual([{ killed: true }]);
    },
    async killRunning(marker) {
      // The server does not notice a dropped client during pg_sleep: end the orphan now.
      await monitor.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE $1 AND pid <> pg_backend_pid()', [
        `%${marker}%`,
      ]);
    },
    victimStatement: (marker) => sql`SELECT pg_sleep(30)${marked(marker)}`,
    sleepThenSelect: (seconds, n, marker) => ({
      query: sql`SELECT ${n}::int AS n FROM pg_sleep(${sql.lit(seconds)})${marked(marker)}`,
      rows: [{ n }],
    }),
    threadIdQuery: () => sql<{ id: number }>`SELECT pg_backend_pid() AS id FROM pg_sleep(0.05)`,
    isFatal: (error) => new PostgresDriver({ connectionString: url }).isFatal(error),
  };
  const faults = faultScenarios(postgres);

  beforeAll(async () => {
    monitor = new pg.Client({ connectionString: url });
    await monitor.connect();
  });
  afterAll(async () => {
    await monitor.end();
  });

  test('an unreachable server: the deadline rejects with POOL_TIMEOUT (create-failed) caused by CONNECTION_FAILED, no password shown', async () => {
    await faults.unreachableServer();
  });

  test('a network stall during a query: the deadline rejects the caller at once, the connection is destroyed after the grace period, and the pool heals', async () => {
    const proxy = await faults.startProxy();
    // A long grace period: the caller must not wait for it.
    const cancelGraceMs = 4_000;
    const database = faults.open(faults.viaProxy(proxy), 2, undefined, cancelGraceMs);
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

  test('a cancel that cannot reach the server is tried again until it does', async () => {
    const marker = `sluice_outage_${process.pid}_${Date.now()}`;
    try {
      const proxy = await faults.startProxy();
      const cancelGraceMs = 300;
      const database = faults.open(faults.viaProxy(proxy), 2, undefined, cancelGraceMs);
      const caller = database
        .withDeadline({ timeoutMs: 500 }, () => sql`SELECT pg_sleep(30)${marked(marker)}`.execute(database.db))
        .catch((error: unknown) => error);
      expect(await eventually(async () => (await backendsRunning(marker)).length === 1)).toBe(true);
      // The statement's own connection still works, but no new connection gets through:
      // every CancelRequest (a connection of its own) is refused.
      proxy.setMode('refuse');
      expect(await caller).toBeInstanceOf(QueryTimeoutError);
      // The connection is given up after cancelGraceMs; the statement sleeps on, for the
      // backend does not read from its client while it runs.
      expect(await eventually(() => database.stats().size === 0)).toBe(true);
      await new Promise((resolve) => setTimeout(resolve, 3 * cancelGraceMs));
      expect(await backendsRunning(marker)).toHaveLength(1);
      proxy.setMode('pass');
      // Once connections get through again, the cancel tried again stops the statement,
      // well before its 30 s are up.
      expect(await eventually(async () => (await backendsRunning(marker)).length === 0, 10_000)).toBe(true);
    } finally {
      await postgres.killRunning(marker);
    }
  });

  test('a connection dropped while idle is evicted: the next query succeeds and nothing crashes the process', async () => {
    await faults.droppedWhileIdle();
  });

  test('a connection dropped while its query runs fails only that query (CONNECTION_LOST, fatal); the pool heals', async () => {
    await faults.lostWhileRunning('dropped');
  });

  test('a busy backend terminated by the server fails only its query (CONNECTION_LOST, fatal); the pool heals', async () => {
    await faults.lostWhileRunning('killed');
  });

  test('backends killed by the server while idle are evicted, and the next queries succeed', async () => {
    await faults.killedWhileIdle();
  });

  test('database.close() leaves no socket open, on the client or the server', async () => {
    await faults.closeLeavesNoSocket();
  });

  test('database.close() with an idle connection on a stalled network still leaves no socket', async () => {
    await faults.closeOnStalledNetwork(300);
  });

  test('a server that accepts but never answers: POOL_TIMEOUT not blamed on exhaustion, and close() leaves no socket', async () => {
    await faults.acceptsButNeverAnswers();
  });
});
