/**
 * The fault scenarios whose logic is the same on every server (faults-postgres, faults-mysql):
 * each test file describes its server as a `FaultBackend` (how to find a statement on it, how
 * to kill a thread, which statements to run) and calls these in its own `test(...)` blocks.
 * What only one server has (MySQL's control connection, PostgreSQL's CancelRequest grace
 * period) stays in that server's file. Nothing is mocked; no assertion is about how long
 * something took.
 */
import { type RawBuilder, sql } from 'kysely';
import { afterEach, expect } from 'vitest';
import { ConnectionError, ConnectionLostError } from '../../src/drivers/errors.js';
import { connect, type Database } from '../../src/orm/connect.js';
import { PoolTimeoutError } from '../../src/pool/errors.js';
import {
  eventually,
  isListening,
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

export type DB = Record<string, never>;

/** A thread (PostgreSQL: a backend) on the server, as the monitor sees it. */
export interface ServerThread {
  readonly id: number;
  /** The client's port: the proxy's upstream port when the client came through it. */
  readonly port: number | undefined;
}

/** What differs from one server to the next, for the shared scenarios. */
export interface FaultBackend {
  /** The server's URL, as global-setup injects it ('' when there is none: the suite is skipped). */
  readonly url: string;
  /** The port the server listens on when its URL names none. */
  readonly defaultPort: number;
  /** The `cancelGraceMs` of every database a test opens unless it says otherwise (undefined: the driver's default). */
  readonly cancelGraceMs?: number;
  /**
   * Whether the driver itself cancels, from outside, the statement of a connection lost while
   * it ran (the server would otherwise run it on, not noticing that its client is gone).
   */
  readonly cancelsOrphanedStatements: boolean;
  /** The threads running a statement that contains `marker`, the monitor's own excluded. */
  running(marker: string): Promise<ServerThread[]>;
  threadExists(id: number): Promise<boolean>;
  /** How many threads the server has for clients at these ports (the proxy's upstream ports). */
  threadsFrom(ports: ReadonlyArray<number | undefined>): Promise<number>;
  /** Kills a thread and its connection from the monitor, failing the test if the server did not. */
  killThread(id: number): Promise<void>;
  /** Ends a test's leftover statements that contain `marker`: the server does not stop them when their client goes. */
  killRunning(marker: string): Promise<void>;
  /** A statement, marked, still running seconds later, when the test breaks its connection. */
  victimStatement(marker: string): RawBuilder<unknown>;
  /** A statement, optionally marked, that sleeps `seconds` on the server then returns `n`; and the rows it returns. */
  sleepThenSelect(seconds: number, n: number, marker?: string): { query: RawBuilder<unknown>; rows: unknown[] };
  /**
   * A statement that returns its connection's thread id as `id`, after a short sleep (so that
   * statements sent at once run on separate connections).
   */
  threadIdQuery(): RawBuilder<{ id: number }>;
  /** The driver's own `isFatal`. */
  isFatal(error: unknown): boolean;
}

/** Connections a test opens besides the pool's (MySQL's control connection), once a pooled one is open. */
export interface ExtraConnections {
  readonly open: (database: Database<DB>) => Promise<void>;
  /** How many sockets they add. */
  readonly count: number;
}

/** A unique marker to find a statement on the server. */
export const markerFor = (name: string): string => `sluice_fault_${name}_${process.pid}_${Date.now()}`;

/**
 * The proxies and databases of `backend`'s fault tests, closed after each test, and the shared
 * scenarios. Call it inside the suite's `describe`: it registers the `afterEach` that closes them.
 */
export function faultScenarios(backend: FaultBackend) {
  const { url } = backend;
  const cleanups: Array<() => Promise<void>> = [];

  afterEach(async () => {
    // Databases first (registered after their proxy), then proxies.
    for (let cleanup = cleanups.pop(); cleanup !== undefined; cleanup = cleanups.pop()) await cleanup();
  });

  /** The injected URL with its host and port swapped for the proxy's (and, optionally, a password). */
  const viaProxy = (proxy: TcpProxy, password?: string): string => viaProxyTo(url, proxy, password);

  async function startProxy(): Promise<TcpProxy> {
    const target = targetOf(url, backend.defaultPort);
    const proxy = await TcpProxy.start(target.host, target.port);
    cleanups.push(() => proxy.close());
    return proxy;
  }

  /** A database the test closes itself. */
  function connectTo(databaseUrl: string, max: number, closeTimeoutMs?: number, cancelGraceMs = backend.cancelGraceMs): Database<DB> {
    return connect<DB>(databaseUrl, {
      pool: { max, ...(closeTimeoutMs !== undefined ? { closeTimeoutMs } : {}) },
      ...(cancelGraceMs !== undefined ? { cancelGraceMs } : {}),
    });
  }

  /** A database closed after the test. */
  function open(databaseUrl: string, max: number, closeTimeoutMs?: number, cancelGraceMs?: number): Database<DB> {
    const database = connectTo(databaseUrl, max, closeTimeoutMs, cancelGraceMs);
    cleanups.push(() => database.close());
    return database;
  }

  /** Runs `body`, then checks that nothing reached the process-level crash paths meanwhile. */
  async function withoutCrashes(body: () => Promise<void>, cleanup?: () => Promise<void>): Promise<void> {
    const watcher = watchProcess();
    try {
      await body();
      await settleEventLoop();
      expect(watcher.seen).toEqual([]);
    } finally {
      watcher.stop();
      await cleanup?.();
    }
  }

  /** What the first query of `database`, under a 300 ms deadline, fails with: a POOL_TIMEOUT. */
  async function poolTimeoutOfFirstQuery(database: Database<DB>): Promise<PoolTimeoutError> {
    const outcome = await outcomeOf(
      database.withDeadline({ timeoutMs: 300 }, () => sql`SELECT 1 AS one`.execute(database.db)),
    );
    expect(outcome.ok).toBe(false);
    const error = (outcome as { error: unknown }).error;
    expect(error).toBeInstanceOf(PoolTimeoutError);
    expect(error).toMatchObject({ code: 'POOL_TIMEOUT' });
    return error as PoolTimeoutError;
  }

  /** An unreachable server: POOL_TIMEOUT (create-failed) caused by CONNECTION_FAILED, no password shown. */
  async function unreachableServer(): Promise<void> {
    const proxy = await startProxy();
    proxy.setMode('refuse');
    const password = new URL(url).password || 'Sluice-Secret-Pw-7c1';
    const proxiedUrl = viaProxy(proxy, password);
    const database = open(proxiedUrl, 2);

    const error = await poolTimeoutOfFirstQuery(database);
    expect(error.reason).toBe('create-failed');
    const cause = error.cause;
    expect(cause).toBeInstanceOf(ConnectionError);
    expect(cause).toMatchObject({ code: 'CONNECTION_FAILED', permanent: false });
    // The pool really tried, through the proxy, and was refused.
    expect(proxy.acceptedConnections).toBeGreaterThan(0);
    expect(database.stats()).toMatchObject({ size: 0, inUse: 0, waiting: 0 });
    const texts = [
      error.message,
      String(error.stack),
      (cause as Error).message,
      String((cause as Error).stack),
      String(error),
      String(cause),
    ];
    for (const text of texts) {
      expect(text).not.toContain(password);
      expect(text).not.toContain(proxiedUrl);
    }
  }

  /** A connection dropped while idle is evicted: the next query succeeds and nothing crashes the process. */
  async function droppedWhileIdle(): Promise<void> {
    await withoutCrashes(async () => {
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
    });
  }

  /**
   * A connection lost while its statement runs, dropped by the network (through the proxy) or
   * killed by the server, fails only that statement (CONNECTION_LOST, fatal) while another runs
   * on; the pool heals.
   */
  async function lostWhileRunning(how: 'dropped' | 'killed'): Promise<void> {
    const victimMarker = markerFor(`${how}_victim`);
    const survivorMarker = markerFor(`${how}_survivor`);
    await withoutCrashes(
      async () => {
        const proxy = how === 'dropped' ? await startProxy() : undefined;
        const database = open(proxy === undefined ? url : viaProxy(proxy), 2);
        const destroyed = recordDestroys(database);

        const victim = outcomeOf(backend.victimStatement(victimMarker).execute(database.db));
        let victimThread: ServerThread | undefined;
        expect(await eventually(async () => (victimThread = (await backend.running(victimMarker))[0]) !== undefined)).toBe(true);
        const survivorStatement = backend.sleepThenSelect(0.3, 42, survivorMarker);
        const survivor = outcomeOf(survivorStatement.query.execute(database.db));
        // Both run at once, on two connections.
        expect(await eventually(async () => (await backend.running(survivorMarker)).length === 1)).toBe(true);
        expect(database.stats()).toMatchObject({ size: 2, inUse: 2 });

        if (proxy !== undefined) {
          expect(proxy.openConnections).toBe(2);
          expect(proxy.drop((connection) => connection.upstreamPort === victimThread!.port)).toBe(1);
        } else {
          await backend.killThread(victimThread!.id);
        }

        const lost = await victim;
        expect(lost.ok).toBe(false);
        const error = (lost as { error: unknown }).error;
        expect(error).toBeInstanceOf(ConnectionLostError);
        expect(error).toMatchObject({ code: 'CONNECTION_LOST' });
        expect(backend.isFatal(error)).toBe(true);
        if (backend.cancelsOrphanedStatements) {
          // The server would run the orphaned statement for its full length (PostgreSQL's
          // pg_sleep does not notice a dropped client): the driver cancels it from outside.
          expect(await eventually(async () => (await backend.running(victimMarker)).length === 0)).toBe(true);
        }

        const survived = await survivor;
        expect(survived).toEqual({ ok: true, value: expect.objectContaining({ rows: survivorStatement.rows }) });

        // The broken connection was destroyed once, not given back; the other one was kept.
        // Destroyed by its caller, or evicted when the server's goodbye reached the pool
        // first (PostgreSQL announces a terminated backend before closing the socket).
        expect(destroyed).toHaveLength(1);
        expect(['destroyed', 'evicted']).toContain(destroyed[0]!.reason);
        expect(database.stats()).toMatchObject({ size: 1, idle: 1, inUse: 0 });

        const healing = [1, 2].map((n) => backend.sleepThenSelect(0.05, n));
        const healed = await Promise.all(healing.map(({ query }) => query.execute(database.db)));
        expect(healed.map((result) => result.rows)).toEqual(healing.map(({ rows }) => rows));
        expect(database.stats()).toMatchObject({ size: 2, inUse: 0 });
        if (how === 'killed') expect(await backend.threadExists(victimThread!.id)).toBe(false);
      },
      // Whatever still runs (the server does not notice a dropped client during a sleep): end it now.
      () => backend.killRunning(victimMarker),
    );
  }

  /** Connections killed by the server while idle are evicted, and the next queries succeed. */
  async function killedWhileIdle(): Promise<void> {
    await withoutCrashes(async () => {
      const database = open(url, 3);
      const destroyed = recordDestroys(database);

      const threadIds = async (): Promise<number[]> => {
        const results = await Promise.all([0, 1, 2].map(() => backend.threadIdQuery().execute(database.db)));
        return results.map((result) => Number(result.rows[0]!.id));
      };
      const before = await threadIds();
      expect(new Set(before).size).toBe(3);
      expect(database.stats()).toMatchObject({ size: 3, idle: 3, inUse: 0 });

      for (const id of before) await backend.killThread(id);

      expect(await eventually(() => destroyed.length === 3)).toBe(true);
      expect(destroyed.map((event) => event.reason)).toEqual(['evicted', 'evicted', 'evicted']);
      expect(database.stats()).toMatchObject({ size: 0, idle: 0, inUse: 0 });

      const after = await threadIds();
      expect(new Set(after).size).toBe(3);
      for (const id of after) expect(before).not.toContain(id);
      expect(database.stats()).toMatchObject({ size: 3, inUse: 0 });
    });
  }

  /** database.close() leaves no socket open, on the client or the server (`extra` ones included). */
  async function closeLeavesNoSocket(extra?: ExtraConnections): Promise<void> {
    const proxy = await startProxy();
    const database = connectTo(viaProxy(proxy), 3);

    await extra?.open(database);
    await Promise.all([0, 1, 2].map(() => backend.sleepThenSelect(0.05, 0).query.execute(database.db)));
    // Three pooled connections, and the extra ones.
    const sockets = 3 + (extra?.count ?? 0);
    expect(proxy.openConnections).toBe(sockets);
    expect(liveSocketsTo(proxy.port)).toBe(sockets);
    const serverPorts = proxy.connections.map((connection) => connection.upstreamPort);
    expect(serverPorts.every((port) => port !== undefined)).toBe(true);
    expect(await backend.threadsFrom(serverPorts)).toBe(sockets);

    await database.close();
    expect(database.stats()).toMatchObject({ size: 0, closed: true });
    expect(liveSocketsTo(proxy.port)).toBe(0);
    expect(await eventually(() => proxy.openConnections === 0)).toBe(true);
    // Nor does the server keep their threads.
    expect(await eventually(async () => (await backend.threadsFrom(serverPorts)) === 0)).toBe(true);

    // And the proxy itself leaves nothing behind.
    await proxy.close();
    expect(await isListening('127.0.0.1', proxy.port, 500)).toBe(false);
  }

  /** database.close() with an idle connection (and `extra` ones) on a stalled network still leaves no socket. */
  async function closeOnStalledNetwork(closeTimeoutMs: number, extra?: ExtraConnections): Promise<void> {
    const proxy = await startProxy();
    const database = open(viaProxy(proxy), 2, closeTimeoutMs);
    const closeErrors: unknown[] = [];
    database.pool.on('error', ({ error, phase }) => {
      if (phase === 'close') closeErrors.push(error);
    });

    await sql`SELECT 1`.execute(database.db);
    await extra?.open(database);
    expect(liveSocketsTo(proxy.port)).toBe(1 + (extra?.count ?? 0));
    proxy.setMode('stall');

    // The server cannot answer a goodbye: the sockets must go anyway, not wait for it.
    const closed = await settledWithin(database.close(), 10_000);
    expect(closed, 'close() hung on a stalled network').toEqual({ settled: true, ok: true, value: undefined });
    expect(await eventually(() => liveSocketsTo(proxy.port) === 0, 1_000)).toBe(true);
    expect(closeErrors).toEqual([]);
  }

  /** A server that accepts but never answers: POOL_TIMEOUT not blamed on exhaustion, and close() leaves no socket. */
  async function acceptsButNeverAnswers(): Promise<void> {
    const proxy = await startProxy();
    proxy.setMode('stall');
    const database = open(viaProxy(proxy), 2, 300);

    const error = await poolTimeoutOfFirstQuery(database);
    // Nothing is in use and there is room to grow: the pool is not exhausted, the database is not answering.
    expect(error.reason).toBe('create-pending');
    expect(database.stats()).toMatchObject({ size: 0, inUse: 0 });
    expect(liveSocketsTo(proxy.port)).toBe(1); // the connect still in progress (the server never answers it)

    await database.close();
    expect(await eventually(() => liveSocketsTo(proxy.port) === 0, 1_000)).toBe(true);
  }

  return {
    startProxy,
    open,
    viaProxy,
    withoutCrashes,
    unreachableServer,
    droppedWhileIdle,
    lostWhileRunning,
    killedWhileIdle,
    closeLeavesNoSocket,
    closeOnStalledNetwork,
    acceptsButNeverAnswers,
  };
}
