// The offload host, proved generic: it hosts a blocking key-value driver that is not SQLite
// (test/fixtures/blocking-kv-driver.ts) in real worker threads. No server needed.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, describe, expect, test } from 'vitest';
import type { BlockingErrorShape } from '../../src/drivers/offload/blocking-driver.js';
import {
  OffloadModuleError,
  startOffloadedConnection,
  type OffloadedConnection,
  type OffloadWorkerOptions,
} from '../../src/drivers/offload/offload-host.js';
import { ConnectionLostError, DatabaseError, NotStartedError } from '../../src/drivers/errors.js';
import { InvalidOptionError, SluiceError } from '../../src/errors.js';
import { createPool, type Pool } from '../../src/pool/index.js';
import type { KvConfig } from '../fixtures/blocking-kv-driver.js';
import { runNode } from '../support/run-node.js';

const KV_MODULE = new URL('../fixtures/blocking-kv-driver.ts', import.meta.url);
const SECRET = 'hunter2-do-not-print';

/** The main-thread half of the kv driver: its errors as sluice's. */
function translateError(shape: BlockingErrorShape): SluiceError {
  return new DatabaseError('QUERY_FAILED', `kv: ${shape.message}`, { cause: shape, errno: shape.errno });
}

function kvOptions(config: KvConfig = {}, extra: Partial<OffloadWorkerOptions<KvConfig>> = {}): OffloadWorkerOptions<KvConfig> {
  return { module: KV_MODULE, config, name: 'kv', translateError, ...extra };
}

/** Every connection a test starts, closed after it, so no thread outlives its test. */
const started: OffloadedConnection[] = [];
const pools: Pool<OffloadedConnection>[] = [];

async function start(config: KvConfig = {}, extra: Partial<OffloadWorkerOptions<KvConfig>> = {}): Promise<OffloadedConnection> {
  const connection = await startOffloadedConnection(kvOptions(config, extra), { signal: new AbortController().signal });
  started.push(connection);
  return connection;
}

/** A sluice pool of kv workers, wired as `connect()` wires drivers: broken ones are evicted. */
function kvPool(config: KvConfig = {}, extra: Partial<OffloadWorkerOptions<KvConfig>> = {}): Pool<OffloadedConnection> {
  const pool: Pool<OffloadedConnection> = createPool<OffloadedConnection>({
    max: 1,
    create: async ({ signal }) => {
      const connection = await startOffloadedConnection(kvOptions(config, extra), { signal });
      connection.onBroken((error) => pool.evict(connection, error));
      return connection;
    },
    destroy: (connection) => connection.close(),
    isFatalError: (_error, connection) => connection.broken,
  });
  pool.on('error', () => {}); // evictions report the worker's death here
  pools.push(pool);
  return pool;
}

afterEach(async () => {
  await Promise.all([...pools.splice(0).map((pool) => pool.close()), ...started.splice(0).map((connection) => connection.close())]);
});

/** Resolves with whether `promise` settled within `ms` (a liveness guard, not a timing claim). */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  const settled = await Promise.race([promise.then(() => true, () => true), late]);
  clearTimeout(timer);
  return settled;
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => {
      throw new Error('expected a rejection');
    },
    (error: unknown) => error,
  );
}

describe('results and parameters', () => {
  test('parameters and values round-trip through the worker, rows come back as objects keyed by column', async () => {
    const kv = await start();
    const bytes = new Uint8Array([0, 1, 254, 255]);
    const when = new Date('2024-05-01T12:00:00.000Z');
    const echoed = await kv.run('ECHO', [1, 'text', null, 2n ** 70n, bytes, when, true, 1.5, -0]);
    expect(echoed.rows).toEqual([{ p1: 1, p2: 'text', p3: null, p4: 2n ** 70n, p5: bytes, p6: when, p7: true, p8: 1.5, p9: -0 }]);
    const row = echoed.rows[0]!;
    expect(row['p5']).toBeInstanceOf(Uint8Array);
    expect(row['p6']).toBeInstanceOf(Date);
    expect(Object.getPrototypeOf(row)).toBe(Object.prototype);

    expect(await kv.run('SET', ['a', { nested: [1, 2] }])).toEqual({ rows: [], affectedRows: 1n, insertId: 1n });
    expect(await kv.run('SET', ['a', { nested: [3] }])).toEqual({ rows: [], affectedRows: 1n, insertId: undefined });
    expect((await kv.run('GET', ['a'])).rows).toEqual([{ value: { nested: [3] } }]);
    // A bigint affected-row count beyond 2^53 stays exact.
    expect((await kv.run('COUNT', [])).affectedRows).toBe(10n ** 15n);

    const many = await kv.run<{ id: number; label: string; half: number | null }>('ROWS 1000', []);
    expect(many.rows).toHaveLength(1000);
    expect(many.rows[0]).toEqual({ id: 0, label: 'row 0', half: null });
    expect(many.rows[999]).toEqual({ id: 999, label: 'row 999', half: 499.5 });
  });

  test('a column named __proto__ is an ordinary property, not the prototype', async () => {
    const kv = await start();
    const [row] = (await kv.run('PROTO', [])).rows;
    expect(Object.getPrototypeOf(row)).toBe(Object.prototype);
    expect(Object.keys(row!)).toEqual(['__proto__', 'a']);
    expect(Object.getOwnPropertyDescriptor(row, '__proto__')?.value).toEqual({ polluted: true });
    expect(({} as { polluted?: unknown }).polluted).toBeUndefined();
  });
});

describe('errors', () => {
  test("a driver's error reaches translateError as its shape, and the connection stays usable", async () => {
    const seen: BlockingErrorShape[] = [];
    const kv = await start({}, { translateError: (shape) => (seen.push(shape), translateError(shape)) });
    const error = await rejection(kv.run('FAIL', ['no such key', 'KV_MISSING']));
    expect(error).toBeInstanceOf(DatabaseError);
    expect(error).toMatchObject({ code: 'QUERY_FAILED', errno: 7, message: 'kv: no such key' });
    expect(seen[0]).toEqual({ name: 'KvError', message: 'no such key', code: 'KV_MISSING', errno: 7 });

    // Whatever is thrown becomes a shape: here a bare string.
    await rejection(kv.run('FAIL_PLAIN', []));
    expect(seen[1]).toEqual({ name: 'string', message: 'a bare string' });

    // A result that cannot cross the thread boundary fails that statement only.
    await rejection(kv.run('UNCLONEABLE', []));
    expect(seen[2]).toMatchObject({ code: 'ERR_OFFLOAD_RESULT_NOT_CLONEABLE' });

    expect(kv.broken).toBe(false);
    await kv.run('SET', ['k', 1]);
    expect((await kv.run('GET', ['k'])).rows).toEqual([{ value: 1 }]);
  });

  test('a parameter that cannot be cloned is an INVALID_OPTION naming it, and nothing reaches the worker', async () => {
    const kv = await start();
    const error = await rejection(kv.run('SET', ['k', () => 1]));
    expect(error).toBeInstanceOf(InvalidOptionError);
    expect(error).toMatchObject({ code: 'INVALID_OPTION', option: 'parameters' });
    expect((error as Error).message).toContain('parameter 2 (a function)');
    expect(kv.broken).toBe(false);
    expect((await kv.run('STATS', [])).rows).toEqual([{ resets: 0, statements: 1 }]);
  });

  test('a translateError that throws still gives the caller a SluiceError', async () => {
    const kv = await start({}, {
      translateError: () => {
        throw new Error('bug in the translator');
      },
    });
    const error = await rejection(kv.run('FAIL', ['boom', 'KV_BOOM']));
    expect(error).toBeInstanceOf(SluiceError);
    expect(error).toMatchObject({ code: 'QUERY_FAILED', message: 'The kv driver failed (KV_BOOM).' });
  });
});

describe('starting', () => {
  test("a failure of open rejects with the driver's own translated error", async () => {
    const error = await rejection(start({ failOpen: true, password: SECRET }));
    expect(error).toBeInstanceOf(DatabaseError);
    expect(error).toMatchObject({ code: 'QUERY_FAILED', errno: 14, message: 'kv: The store cannot be opened.' });
    expect(((error as Error).cause as BlockingErrorShape).code).toBe('KV_CANTOPEN');
  });

  test('a module that cannot be loaded, or has no open, fails permanently with OFFLOAD_MODULE_FAILED', async () => {
    const missing = await rejection(start({}, { module: new URL('../fixtures/no-such-driver.ts', import.meta.url) }));
    expect(missing).toBeInstanceOf(OffloadModuleError);
    expect(missing).toMatchObject({ code: 'OFFLOAD_MODULE_FAILED', permanent: true });
    expect((missing as Error).message).toContain('ERR_MODULE_NOT_FOUND');

    // An absolute path works as well as a URL; this module exports no `open`.
    const noOpen = await rejection(start({}, { module: fileURLToPath(new URL('../support/run-node.ts', import.meta.url)) }));
    expect(noOpen).toMatchObject({ code: 'OFFLOAD_MODULE_FAILED' });
    expect((noOpen as Error).message).toContain('does not export an `open` function');
  });

  test('bad options are INVALID_OPTION without echoing the config', async () => {
    await expect(start({}, { module: './relative.js' })).rejects.toMatchObject({ code: 'INVALID_OPTION', option: 'module' });
    const error = await rejection(start({ password: SECRET, notCloneable: () => SECRET } as KvConfig));
    expect(error).toMatchObject({ code: 'INVALID_OPTION', option: 'config' });
    expect((error as Error).message).not.toContain(SECRET);
  });

  test('an abort while the module opens terminates the worker and rejects with the reason', async () => {
    const controller = new AbortController();
    const opening = startOffloadedConnection(kvOptions({ openDelayMs: 10_000 }), { signal: controller.signal });
    setTimeout(() => controller.abort('gave up'), 50);
    expect(await rejection(opening)).toBe('gave up');
    // Already aborted: no thread is started at all.
    await expect(startOffloadedConnection(kvOptions(), { signal: AbortSignal.abort('early') })).rejects.toBe('early');
  });
});

describe('deadlines and aborts', () => {
  test('a deadline during a statement rejects with its reason, the worker is terminated, and the process stays healthy', async () => {
    const kv = await start();
    const heard: unknown[] = [];
    kv.onBroken((error) => heard.push(error));
    const signal = AbortSignal.timeout(100);
    const running = kv.run('SLEEP 5000', [], { signal });
    expect(await settlesWithin(running, 3_000)).toBe(true);
    expect(await rejection(running)).toBe(signal.reason);
    expect(kv.broken).toBe(true);
    expect(heard).toEqual([]); // the caller heard, through its rejection
    expect(await settlesWithin(kv.exited, 3_000)).toBe(true);
    await expect(kv.run('GET', ['k'])).rejects.toMatchObject({ code: 'CONNECTION_LOST' });
    await kv.close(); // on a gone thread: resolves

    const next = await start();
    expect((await next.run('ECHO', ['still fine'])).rows).toEqual([{ p1: 'still fine' }]);
  });

  test('the caller hears at once even when the thread cannot stop yet (inside a native call)', async () => {
    const kv = await start();
    let exited = false;
    void kv.exited.then(() => (exited = true));
    const controller = new AbortController();
    const running = kv.run('NATIVE_SLEEP 1500', [], { signal: controller.signal });
    setTimeout(() => controller.abort('stop'), 100);
    expect(await rejection(running)).toBe('stop');
    // Rejected before the thread is gone: termination lands when the native call returns.
    expect(exited).toBe(false);
    await kv.exited;
    expect(exited).toBe(true);
  });

  test('calls made together run in order, one at a time; aborting one still waiting leaves the connection usable', async () => {
    const kv = await start();
    const waiting = new AbortController();
    const results = Promise.all([
      kv.run('SET', ['a', 1]),
      kv.run('SLEEP 200', []),
      kv.run('GET', ['a']),
      kv.run('SET', ['a', 2], { signal: waiting.signal }).catch((error: unknown) => error),
      kv.run('GET', ['a']),
    ]);
    setTimeout(() => waiting.abort('not needed'), 50);
    const [, , first, abandoned, second] = await results;
    expect(first.rows).toEqual([{ value: 1 }]);
    expect(abandoned).toBe('not needed');
    expect(second.rows).toEqual([{ value: 1 }]);
    expect(kv.broken).toBe(false);
    expect((await kv.run('STATS', [])).rows).toEqual([{ resets: 0, statements: 5 }]);
  });

  test('one signal shared by several statements (a deadline scope) still cancels the later ones', async () => {
    const kv = await start();
    const scope = new AbortController();
    await kv.run('SLEEP 10', [], { signal: scope.signal });
    const later = kv.run('SLEEP 5000', [], { signal: scope.signal });
    setTimeout(() => scope.abort('scope over'), 50);
    expect(await rejection(later)).toBe('scope over');
    expect(kv.broken).toBe(true);
  });
});

describe('pipelining', () => {
  test('many concurrent calls on one connection are all answered, each after the ones made before it', async () => {
    const kv = await start();
    // 300 pairs made in one turn: each GET must see the SET just before it, so the worker
    // ran them in the order they were made, however they were batched.
    const calls: Array<Promise<unknown>> = [];
    for (let i = 0; i < 300; i++) {
      calls.push(kv.run('SET', ['k', i]));
      calls.push(kv.run('GET', ['k']).then((result) => result.rows[0]!['value']));
    }
    expect(kv.inFlight).toBe(600);
    const values = await Promise.all(calls);
    expect(values.filter((_, index) => index % 2 === 1)).toEqual(Array.from({ length: 300 }, (_, i) => i));
    expect(kv.inFlight).toBe(0);
    // More than the worker has slots (1024) at once: the rest wait their turn, none is lost.
    const many = await Promise.all(Array.from({ length: 2500 }, (_, i) => kv.run('ECHO', [i])));
    expect(many.map((result) => result.rows[0]!['p1'])).toEqual(Array.from({ length: 2500 }, (_, i) => i));
    expect((await kv.run('STATS', [])).rows).toEqual([{ resets: 0, statements: 3101 }]);
  });

  test('a deadline on the running statement: calls before it get their results, calls after it NOT_STARTED at once', async () => {
    const kv = await start();
    const controller = new AbortController();
    const settled = (promise: Promise<unknown>): Promise<unknown> => promise.then((result) => result, (error: unknown) => error);
    const before = [kv.run('SET', ['a', 1]), kv.run('ECHO', ['b'])].map(settled);
    const running = settled(kv.run('NATIVE_SLEEP 1500', [], { signal: controller.signal }));
    const after = [kv.run('SET', ['a', 2]), kv.run('GET', ['a']), kv.ping()].map(settled);
    setTimeout(() => controller.abort('stop'), 150);
    expect(await running).toBe('stop');
    // Answered before the thread is gone (it is still inside the native call).
    let exited = false;
    void kv.exited.then(() => (exited = true));
    const afterErrors = await Promise.all(after);
    expect(exited).toBe(false);
    for (const error of afterErrors) {
      expect(error).toBeInstanceOf(NotStartedError);
      expect(error).toBeInstanceOf(ConnectionLostError);
      expect(error).toMatchObject({ code: 'NOT_STARTED' });
    }
    expect(await Promise.all(before)).toEqual([
      { rows: [], affectedRows: 1n, insertId: 1n },
      { rows: [{ p1: 'b' }], affectedRows: undefined, insertId: undefined },
    ]);
    expect(kv.broken).toBe(true);
    await kv.exited;
  });

  test('a thread that dies mid-batch: replies it posted before dying still arrive, the rest never started', async () => {
    const kv = await start();
    const settled = (promise: Promise<unknown>): Promise<unknown> => promise.then((result) => result, (error: unknown) => error);
    // One turn, so one batch after the first: the worker posts two replies and exits at once.
    const outcomes = await Promise.all(
      [kv.run('SLEEP 50', []), kv.run('SET', ['a', 1]), kv.run('ECHO', ['x']), kv.run('CRASH', []), kv.run('GET', ['a']), kv.run('ECHO', ['y'])].map(settled),
    );
    expect(outcomes[0]).toEqual({ rows: [], affectedRows: undefined, insertId: undefined });
    expect(outcomes[1]).toEqual({ rows: [], affectedRows: 1n, insertId: 1n });
    expect(outcomes[2]).toEqual({ rows: [{ p1: 'x' }], affectedRows: undefined, insertId: undefined });
    expect(outcomes[3]).toBeInstanceOf(ConnectionLostError);
    expect(outcomes[3]).not.toBeInstanceOf(NotStartedError);
    expect(outcomes[3]).toMatchObject({ code: 'CONNECTION_LOST', message: 'The kv worker thread exited (exit code 3); its connection is lost.' });
    expect(outcomes[4]).toMatchObject({ code: 'NOT_STARTED' });
    expect(outcomes[5]).toMatchObject({ code: 'NOT_STARTED' });
  });

  test('aborted at any moment of a batch: completed calls keep their results, calls after the running one NOT_STARTED', async () => {
    // The abort lands wherever the worker happens to be. Before the sleep started: it is
    // skipped and the rest run. While it runs: the thread is terminated, and the calls after
    // it never started. Either way no completed call is reported lost, nor a skipped one run.
    let terminated = 0;
    for (const delayMs of [0, 1, 2, 5, 30]) {
      const kv = await start();
      const controller = new AbortController();
      const calls = Array.from({ length: 40 }, (_, i) =>
        kv.run(i === 30 ? 'SLEEP 5000' : 'ECHO', [i], i === 30 ? { signal: controller.signal } : {}).then(
          (result) => result.rows[0]?.['p1'] ?? 'slept',
          (error: unknown) => (error === 'stop' ? 'stop' : (error as SluiceError).code),
        ),
      );
      setTimeout(() => controller.abort('stop'), delayMs);
      const outcomes = await Promise.all(calls);
      expect(outcomes[30]).toBe('stop');
      const others = outcomes.filter((_, i) => i !== 30);
      const numbers = Array.from({ length: 40 }, (_, i) => i).filter((i) => i !== 30);
      if (kv.broken) {
        // Terminated while the sleep ran: everything before it had completed.
        expect(others).toEqual([...numbers.slice(0, 30), ...Array(9).fill('NOT_STARTED')]);
        terminated++;
        await kv.exited;
      } else {
        expect(others).toEqual(numbers);
        expect((await kv.run('STATS', [])).rows).toEqual([{ resets: 0, statements: 40 }]);
      }
    }
    // The last delay outlasts the start of the sleep: that path was taken at least once.
    expect(terminated).toBeGreaterThan(0);
  });
});

describe('through a sluice pool', () => {
  test('a worker terminated on a deadline is replaced and the pool keeps serving', async () => {
    const pool = kvPool();
    await pool.use((kv) => kv.run('SET', ['k', 'v']));
    const signal = AbortSignal.timeout(100);
    const error = await rejection(pool.use((kv) => kv.run('SLEEP 5000', [], { signal })));
    expect(error).toBe(signal.reason);
    // A new worker: the old one's in-memory store is gone with it.
    expect(await pool.use((kv) => kv.run('GET', ['k']))).toMatchObject({ rows: [{ value: null }] });
    expect(await pool.use((kv) => kv.run('ECHO', [1]))).toMatchObject({ rows: [{ p1: 1 }] });
    expect(pool.stats().totals).toMatchObject({ created: 2, destroyed: 1 });
  });

  test('a worker that crashes mid-statement rejects it with CONNECTION_LOST, and the pool replaces it', async () => {
    const pool = kvPool({ password: SECRET });
    const error = await rejection(pool.use((kv) => kv.run('CRASH', [])));
    expect(error).toBeInstanceOf(ConnectionLostError);
    expect(error).toMatchObject({ code: 'CONNECTION_LOST' });
    expect((error as Error).message).toBe('The kv worker thread exited (exit code 3); its connection is lost.');
    expect(await pool.use((kv) => kv.run('ECHO', ['after']))).toMatchObject({ rows: [{ p1: 'after' }] });
    expect(pool.stats().totals).toMatchObject({ created: 2, destroyed: 1 });
  });

  test('a worker that runs out of memory (resourceLimits) rejects with CONNECTION_LOST, and the pool replaces it', async () => {
    const pool = kvPool({}, { resourceLimits: { maxOldGenerationSizeMb: 48, maxYoungGenerationSizeMb: 8 } });
    const error = await rejection(pool.use((kv) => kv.run('OOM', [])));
    expect(error).toBeInstanceOf(ConnectionLostError);
    expect((error as Error).message).toMatch(/memory.*ERR_WORKER_OUT_OF_MEMORY/);
    expect(await pool.use((kv) => kv.run('ECHO', ['after']))).toMatchObject({ rows: [{ p1: 'after' }] });
    expect(pool.stats().totals).toMatchObject({ created: 2, destroyed: 1 });
  });

  test('an idle worker that dies is reported to onBroken, and the pool evicts it', async () => {
    const pool = kvPool({ password: SECRET });
    const evicted = new Promise<unknown>((resolve) => pool.once('destroy', ({ reason }) => resolve(reason)));
    const heard = new Promise<unknown>((resolve) => pool.once('error', ({ error }) => resolve(error)));
    await pool.use((kv) => kv.run('THROW_LATER 20', []));
    const error = await heard;
    expect(error).toBeInstanceOf(ConnectionLostError);
    expect((error as Error).message).toBe('The kv worker thread exited (an uncaught Error was thrown in it); its connection is lost.');
    expect((error as Error).message).not.toContain(SECRET);
    expect(await evicted).toBe('evicted');
    expect(await pool.use((kv) => kv.run('ECHO', ['after']))).toMatchObject({ rows: [{ p1: 'after' }] });
  });
});

describe('the main thread', () => {
  test('the event loop keeps ticking while a statement blocks its worker for a second', async () => {
    const kv = await start();
    let ticks = 0;
    const ticker = setInterval(() => ticks++, 50);
    try {
      await kv.run('SLEEP 1000', []);
    } finally {
      clearInterval(ticker);
    }
    expect(ticks).toBeGreaterThanOrEqual(5);
  });

  test('reset() crosses the thread only when a transaction may be open', async () => {
    const kv = await start();
    const resets = async (): Promise<unknown> => (await kv.run('STATS', [])).rows[0]!['resets'];
    await kv.run('SET', ['k', 1]);
    await kv.reset();
    expect(await resets()).toBe(0);
    await kv.run('BEGIN', []);
    await kv.reset();
    expect(await resets()).toBe(1);
    await kv.reset(); // rolled back: clean again
    expect(await resets()).toBe(1);
    // After a failed statement the driver did not say: reset to be safe.
    await rejection(kv.run('FAIL', ['x']));
    await kv.reset();
    expect(await resets()).toBe(2);
  });
});

describe('closing', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-offload-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test("close() lets the module close its connection, ends the thread, and never rejects", async () => {
    const marker = join(dir, 'closed-politely');
    const kv = await start({ closeMarker: marker });
    await kv.ping();
    await kv.close();
    expect(readFileSync(marker, 'utf8')).toBe('closed');
    expect(await settlesWithin(kv.exited, 0)).toBe(true);
    await kv.close(); // twice: fine
    await expect(kv.run('GET', ['k'])).rejects.toMatchObject({ code: 'CONNECTION_LOST' });
  });

  test('a module slow to close is terminated after the grace period', async () => {
    const marker = join(dir, 'never-written');
    const kv = await start({ closeMarker: marker, closeDelayMs: 10_000 }, { closeGraceMs: 100 });
    expect(await settlesWithin(kv.close(), 5_000)).toBe(true);
    expect(existsSync(marker)).toBe(false);
  });

  test('close() during a statement terminates the worker and rejects the statement with CONNECTION_LOST', async () => {
    const kv = await start();
    const running = rejection(kv.run('SLEEP 5000', []));
    // Pipelined: a statement the worker has not started yet is withdrawn (NOT_STARTED), so
    // let it start first.
    await new Promise((resolve) => setTimeout(resolve, 100));
    const queued = rejection(kv.run('ECHO', [1]));
    expect(await settlesWithin(kv.close(), 3_000)).toBe(true);
    expect(await running).toMatchObject({ code: 'CONNECTION_LOST' });
    expect(await queued).toMatchObject({ code: 'NOT_STARTED' });
  });

  test('a process that started workers, ran statements and closed them exits on its own', async () => {
    const outcome = await runNode([fileURLToPath(new URL('../fixtures/offload-close-then-exit.ts', import.meta.url))]);
    expect(outcome.stderr).toBe('');
    expect(outcome).toMatchObject({ code: 0, signal: null });
    expect(JSON.parse(outcome.stdout)).toEqual({
      got: [{ value: 'v' }],
      timedOut: 'TimeoutError',
      crashed: 'CONNECTION_LOST',
      failedOpen: 'KV_CANTOPEN',
      aborted: true,
    });
  });
});
