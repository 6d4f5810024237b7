import { fileURLToPath } from 'node:url';
import { describe, expect, test, vi } from 'vitest';
import { createPool, PoolClosedError } from '../../src/index.js';
import { type ChildOutcome, runNode } from '../support/run-node.js';
import { FakeFactory, type FakeResource, settle, track, poolsClosedAfterEach } from './fake-resources.js';

const { makePool } = poolsClosedAfterEach();

/** Runs a fixture script in a child process and reports how it ended. */
function runFixture(name: string): Promise<ChildOutcome> {
  return runNode([fileURLToPath(new URL(`../fixtures/${name}`, import.meta.url))]);
}

describe('process lifetime', () => {
  test('a caller waiting for ever keeps the process alive through create backoff', async () => {
    const { code, stdout, stderr } = await runFixture('wait-through-backoff.ts');
    expect(stderr).toBe('');
    expect(code).toBe(0);
    expect(JSON.parse(stdout.trim())).toEqual({ id: 3 });
  });
});

describe('close()', () => {
  test('rejects waiting and new acquires with POOL_CLOSED', async () => {
    const pool = makePool(new FakeFactory(), { max: 1 });
    const held = await pool.acquire();
    const waiters = [track(pool.acquire()), track(pool.acquire({ timeoutMs: Infinity }))];
    const closing = pool.close();
    await settle();
    for (const waiter of waiters) {
      expect(waiter.state()).toBe('rejected');
      expect(waiter.error()).toBeInstanceOf(PoolClosedError);
      expect((waiter.error() as PoolClosedError).code).toBe('POOL_CLOSED');
    }
    expect(pool.stats()).toMatchObject({ waiting: 0, closed: true });
    await expect(pool.acquire()).rejects.toBeInstanceOf(PoolClosedError);
    await expect(pool.use(() => 1)).rejects.toBeInstanceOf(PoolClosedError);
    held.release();
    await closing;
  });

  test('waits for leases to come back, then destroys every resource exactly once', async () => {
    const factory = new FakeFactory();
    const pool = makePool(factory, { max: 3 });
    const leases = await Promise.all([pool.acquire(), pool.acquire(), pool.acquire()]);
    leases[0]!.release();
    const closing = track(pool.close());
    await settle();
    expect(closing.state()).toBe('pending');
    expect(factory.destroyed.get(leases[0]!.resource.id)).toBe(1);
    leases[1]!.release();
    leases[2]!.destroy();
    await closing.promise;
    expect(factory.notDestroyedExactlyOnce()).toEqual([]);
    expect(pool.stats()).toMatchObject({ size: 0, idle: 0, inUse: 0, pendingCreates: 0 });
    expect(pool.close()).toBe(closing.promise);
  });

  test('the wait is bounded: after closeTimeoutMs leases still out are destroyed anyway', async () => {
    vi.useFakeTimers();
    const factory = new FakeFactory();
    const pool = makePool(factory, { max: 2, closeTimeoutMs: 1_000 });
    const stuck = await pool.acquire();
    const reasons: string[] = [];
    pool.on('destroy', ({ reason }) => reasons.push(reason));
    const closing = track(pool.close());
    await vi.advanceTimersByTimeAsync(999);
    expect(closing.state()).toBe('pending');
    await vi.advanceTimersByTimeAsync(1);
    expect(closing.state()).toBe('fulfilled');
    expect(reasons).toEqual(['closed']);
    // Its holder giving it back late is harmless: no second destroy, no error.
    expect(() => stuck.release()).not.toThrow();
    expect(factory.notDestroyedExactlyOnce()).toEqual([]);
    expect(pool.stats()).toMatchObject({ size: 0, inUse: 0 });
  });

  test('aborts pending creates; a resource that arrives after close is destroyed', async () => {
    const factory = new FakeFactory();
    factory.closeGate();
    const pool = makePool(factory, { max: 2 });
    const waiter = track(pool.acquire());
    await settle();
    expect(pool.stats().pendingCreates).toBe(1);
    await pool.close();
    expect(waiter.error()).toBeInstanceOf(PoolClosedError);
    expect(pool.stats().pendingCreates).toBe(0);
    expect(factory.inFlight).toBe(0); // the factory honoured the abort signal
  });

  test('destroy errors are reported, not thrown, and close still completes', async () => {
    const pool = createPool<FakeResource>({
      max: 1,
      create: () => ({ id: 1 }),
      destroy: () => Promise.reject(new Error('socket already closed')),
    });
    const errors: string[] = [];
    pool.on('error', ({ phase }) => errors.push(phase));
    (await pool.acquire()).release();
    await pool.close();
    expect(errors).toEqual(['destroy']);
  });

  test('a destroy that never settles cannot hold close() past closeTimeoutMs', async () => {
    vi.useFakeTimers();
    const pool = createPool<FakeResource>({
      max: 1,
      closeTimeoutMs: 1_000,
      create: () => ({ id: 1 }),
      destroy: () => new Promise<void>(() => {}),
    });
    const errors: Array<{ phase: string; code: string | undefined }> = [];
    pool.on('error', ({ error, phase }) => errors.push({ phase, code: (error as { code?: string }).code }));
    (await pool.acquire()).release();
    const closing = track(pool.close());
    await vi.advanceTimersByTimeAsync(999);
    expect(closing.state()).toBe('pending');
    await vi.advanceTimersByTimeAsync(1);
    expect(closing.state()).toBe('fulfilled');
    expect(errors).toEqual([{ phase: 'close', code: 'CLOSE_TIMEOUT' }]);
  });

  test('aborts validations in flight; their callers get POOL_CLOSED at once', async () => {
    const seen: AbortSignal[] = [];
    const pool = makePool(new FakeFactory(), {
      max: 1,
      validateAfterIdleMs: 0,
      validateTimeoutMs: Infinity,
      validate: (_, { signal }) => {
        seen.push(signal);
        return new Promise<boolean>(() => {});
      },
    });
    (await pool.acquire()).release();
    const caller = track(pool.acquire({ timeoutMs: Infinity }));
    await settle();
    expect(pool.stats().inUse).toBe(1);
    await pool.close();
    await settle();
    expect(seen[0]!.aborted).toBe(true);
    expect(caller.error()).toBeInstanceOf(PoolClosedError);
    expect(pool.stats()).toMatchObject({ size: 0, inUse: 0 });
  });

  test('is closed from its first instant: an acquire from a destroy listener is refused', async () => {
    const pool = makePool(new FakeFactory(), { max: 1 });
    (await pool.acquire()).release();
    const reentrant: Array<Promise<unknown>> = [];
    pool.on('destroy', () => {
      expect(pool.stats().closed).toBe(true);
      reentrant.push(pool.acquire({ timeoutMs: Infinity }).catch((e: unknown) => e));
    });
    const first = pool.close();
    expect(pool.close()).toBe(first);
    await first;
    expect(reentrant).toHaveLength(1);
    expect(await reentrant[0]).toBeInstanceOf(PoolClosedError);
    expect(pool.stats().waiting).toBe(0);
  });

  test('emits close once everything is destroyed', async () => {
    const factory = new FakeFactory();
    const pool = makePool(factory, { max: 1 });
    (await pool.acquire()).release();
    let destroyedAtClose = -1;
    pool.on('close', () => {
      destroyedAtClose = factory.destroyed.size;
    });
    await pool.close();
    expect(destroyedAtClose).toBe(1);
  });

  test('a process whose only pool is closed exits on its own', async () => {
    const { code, signal, stdout, stderr } = await runFixture('close-then-exit.ts');
    expect(stderr).toBe('');
    expect(signal).toBeNull();
    expect(code).toBe(0);
    const [waiterLine, statsLine] = stdout.trim().split('\n');
    expect(JSON.parse(waiterLine!)).toEqual({ waiter: 'POOL_CLOSED' });
    expect(JSON.parse(statsLine!).stats).toMatchObject({ size: 0, closed: true, totals: { created: 2, destroyed: 2 } });
  });
});
