import { describe, expect, test, vi } from 'vitest';
import { createPool, PoolCreateError, PoolTimeoutError } from '../../src/index.js';
import { FakeFactory, type FakeResource, settle, track, poolsClosedAfterEach } from './fake-resources.js';

const { makePool, keep } = poolsClosedAfterEach();

const refused = (): Error => Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });

describe('creating resources', () => {
  test('creates run in the background, never more pending than the waiters need', async () => {
    const factory = new FakeFactory();
    factory.closeGate();
    const pool = makePool(factory, { max: 10 });
    const first = [track(pool.acquire()), track(pool.acquire()), track(pool.acquire())];
    await settle();
    expect(pool.stats()).toMatchObject({ waiting: 3, pendingCreates: 3, size: 0 });
    expect(factory.inFlight).toBe(3);
    // A waiter that gives up does not cancel a create; the resource will go idle.
    const controller = new AbortController();
    const quitter = track(pool.acquire({ signal: controller.signal }));
    expect(pool.stats().pendingCreates).toBe(4);
    controller.abort();
    await settle();
    expect(quitter.state()).toBe('rejected');
    expect(pool.stats()).toMatchObject({ waiting: 3, pendingCreates: 4 });
    factory.openGate();
    const leases = await Promise.all(first.map((t) => t.promise));
    await settle();
    expect(factory.peakInFlight).toBe(4);
    expect(pool.stats()).toMatchObject({ size: 4, inUse: 3, idle: 1, pendingCreates: 0 });
    for (const lease of leases) lease.release();
  });

  test('creates never push size + pending past max', async () => {
    const factory = new FakeFactory();
    factory.closeGate();
    const pool = makePool(factory, { max: 2 });
    const waiters = Array.from({ length: 6 }, () => track(pool.acquire()));
    await settle();
    expect(pool.stats()).toMatchObject({ pendingCreates: 2, waiting: 6 });
    factory.openGate();
    await settle();
    expect(pool.stats()).toMatchObject({ size: 2, inUse: 2, waiting: 4 });
    expect(factory.calls).toBe(2);
    for (const waiter of waiters) void waiter.promise.then((lease) => setImmediate(() => lease.release()));
    await Promise.all(waiters.map((waiter) => waiter.promise));
  });

  test('a transient create error is retried with backoff until it works', async () => {
    const factory = new FakeFactory();
    factory.failures.push(refused(), refused(), refused());
    const pool = makePool(factory, { max: 1, createRetryDelayMs: 2, createRetryMaxDelayMs: 10 });
    const errors: unknown[] = [];
    pool.on('error', ({ error, phase }) => errors.push([phase, error]));
    const lease = await pool.acquire({ timeoutMs: 5_000 });
    expect(lease.resource.id).toBe(1);
    expect(factory.calls).toBe(4);
    expect(errors).toHaveLength(3);
    expect(errors[0]).toEqual(['create', expect.objectContaining({ code: 'ECONNREFUSED' })]);
    expect(pool.stats().totals.createErrors).toBe(3);
    lease.release();
  });

  test('retries back off: delays grow between attempts', async () => {
    vi.useFakeTimers();
    const factory = new FakeFactory();
    for (let i = 0; i < 50; i++) factory.failures.push(refused());
    const pool = makePool(factory, { max: 1, createRetryDelayMs: 100, createRetryMaxDelayMs: 800 });
    const waiter = track(pool.acquire({ timeoutMs: 60_000 }));
    const callsAt: number[] = [];
    let last = 0;
    for (let t = 0; t < 5_000; t += 10) {
      await vi.advanceTimersByTimeAsync(10);
      if (factory.calls !== last) {
        last = factory.calls;
        callsAt.push(t);
      }
    }
    const gaps = callsAt.slice(1).map((at, i) => at - callsAt[i]!);
    // Equal jitter: retry n waits between half and all of min(800, 100 * 2^(n-1)).
    expect(gaps[0]).toBeGreaterThanOrEqual(40);
    expect(gaps[0]).toBeLessThanOrEqual(120);
    expect(gaps[3]).toBeGreaterThanOrEqual(390);
    for (const gap of gaps) expect(gap).toBeLessThanOrEqual(820);
    expect(waiter.state()).toBe('pending');
    await pool.close();
    expect(waiter.state()).toBe('rejected');
  });

  test('a timeout while creates fail says so and carries the last create error as cause', async () => {
    const factory = new FakeFactory();
    for (let i = 0; i < 1_000; i++) factory.failures.push(refused());
    const pool = makePool(factory, { max: 3, createRetryDelayMs: 1, createRetryMaxDelayMs: 5 });
    const error = (await pool.acquire({ timeoutMs: 50 }).catch((e: unknown) => e)) as PoolTimeoutError;
    expect(error).toBeInstanceOf(PoolTimeoutError);
    expect(error.reason).toBe('create-failed');
    expect(error.message).toContain('creating one keeps failing');
    expect(error.message).toContain('ECONNREFUSED');
    expect(error.cause).toMatchObject({ code: 'ECONNREFUSED' });
    expect(factory.calls).toBeGreaterThan(1);
  });

  test('an error the factory marks permanent fails every waiter at once, without retrying', async () => {
    const factory = new FakeFactory();
    const badPassword = Object.assign(new Error('password authentication failed for user "app"'), {
      code: '28P01',
      permanent: true,
    });
    factory.failures.push(badPassword, badPassword);
    const pool = makePool(factory, { max: 2, createRetryDelayMs: 1 });
    const results = await Promise.allSettled([pool.acquire({ timeoutMs: 60_000 }), pool.acquire({ timeoutMs: 60_000 })]);
    for (const result of results) {
      expect(result.status).toBe('rejected');
      const reason = (result as PromiseRejectedResult).reason as PoolCreateError;
      expect(reason).toBeInstanceOf(PoolCreateError);
      expect(reason.code).toBe('POOL_CREATE_FAILED');
      expect(reason.cause).toBe(badPassword);
      expect(reason.message).toContain('28P01');
    }
    expect(pool.stats()).toMatchObject({ waiting: 0 });
    // The pool stays usable: once the cause is fixed, acquire works.
    const lease = await pool.acquire();
    expect(lease.resource.id).toBe(1);
    lease.release();
  });

  test('isPermanentCreateError decides what is permanent', async () => {
    const factory = new FakeFactory();
    const unknownDb = Object.assign(new Error('database "nope" does not exist'), { code: '3D000' });
    factory.failures.push(unknownDb);
    const pool = makePool(factory, {
      max: 1,
      isPermanentCreateError: (error) => (error as { code?: string }).code === '3D000',
    });
    await expect(pool.acquire({ timeoutMs: 60_000 })).rejects.toBeInstanceOf(PoolCreateError);
    expect(factory.calls).toBe(1);
  });

  test('an isPermanentCreateError that throws is reported and the create is retried', async () => {
    const factory = new FakeFactory();
    factory.failures.push(refused());
    const pool = makePool(factory, {
      max: 1,
      createRetryDelayMs: 1,
      isPermanentCreateError: () => {
        throw new TypeError('classifier bug');
      },
    });
    const phases: string[] = [];
    pool.on('error', ({ phase }) => phases.push(phase));
    const lease = await pool.acquire({ timeoutMs: 5_000 });
    expect(lease.resource.id).toBe(1);
    expect(phases).toEqual(['create', 'hook']);
    lease.release();
  });

  test('a create that hangs past createTimeoutMs is aborted with CREATE_TIMEOUT and retried', async () => {
    let calls = 0;
    const pool = createPool<FakeResource>({
      max: 1,
      createTimeoutMs: 20,
      createRetryDelayMs: 1,
      destroy: () => {},
      create: ({ signal }) => {
        calls++;
        if (calls === 1) {
          // Ignores nothing: rejects when the pool aborts it.
          return new Promise((_, reject) => signal.addEventListener('abort', () => reject(signal.reason)));
        }
        return { id: calls };
      },
    });
    keep(pool);
    const codes: unknown[] = [];
    pool.on('error', ({ error }) => codes.push((error as { code?: unknown }).code));
    const lease = await pool.acquire({ timeoutMs: 5_000 });
    expect(lease.resource.id).toBe(2);
    expect(pool.stats().totals.createErrors).toBe(1);
    expect(codes).toEqual(['CREATE_TIMEOUT']);
    lease.release();
  });

  test('a create that ignores its signal and resolves late is destroyed, not leaked', async () => {
    const destroyed: number[] = [];
    let resolveLate: ((resource: FakeResource) => void) | undefined;
    let calls = 0;
    const pool = createPool<FakeResource>({
      max: 1,
      createTimeoutMs: 10,
      createRetryDelayMs: 1,
      destroy: (resource) => void destroyed.push(resource.id),
      create: () => {
        calls++;
        if (calls === 1) return new Promise<FakeResource>((resolve) => (resolveLate = resolve));
        return { id: calls };
      },
    });
    keep(pool);
    const lease = await pool.acquire({ timeoutMs: 5_000 });
    expect(lease.resource.id).toBe(2);
    resolveLate!({ id: 1 });
    await settle();
    expect(destroyed).toEqual([1]);
    expect(pool.stats()).toMatchObject({ size: 1, pendingCreates: 0 });
    lease.release();
  });

  test('a factory that throws synchronously counts as a failed create', async () => {
    let calls = 0;
    const pool = createPool<FakeResource>({
      max: 1,
      createRetryDelayMs: 1,
      destroy: () => {},
      create: () => {
        calls++;
        if (calls === 1) throw new TypeError('bad config');
        return { id: calls };
      },
    });
    keep(pool);
    const lease = await pool.acquire();
    expect(lease.resource.id).toBe(2);
    lease.release();
  });

  test('min resources are kept warm, and replaced when destroyed', async () => {
    const factory = new FakeFactory();
    const pool = makePool(factory, { max: 5, min: 3 });
    await vi.waitFor(() => expect(pool.stats()).toMatchObject({ size: 3, idle: 3 }));
    const lease = await pool.acquire();
    lease.destroy();
    await vi.waitFor(() => expect(pool.stats()).toMatchObject({ size: 3, idle: 3 }));
    expect(factory.created).toHaveLength(4);
  });

  test('emits create events', async () => {
    const factory = new FakeFactory();
    const pool = makePool(factory, { max: 1 });
    const created: number[] = [];
    pool.on('create', ({ resource }) => created.push(resource.id));
    (await pool.acquire()).release();
    expect(created).toEqual([1]);
  });
});
