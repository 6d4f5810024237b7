import { describe, expect, test, vi } from 'vitest';
import { type DestroyReason, type Pool, PoolTimeoutError } from '../../src/index.js';
import { FakeFactory, type FakeResource, settle, track, poolsClosedAfterEach } from './fake-resources.js';

const { makePool } = poolsClosedAfterEach();

function destroyLog(pool: Pool<FakeResource>): Array<[number, DestroyReason]> {
  const log: Array<[number, DestroyReason]> = [];
  pool.on('destroy', ({ resource, reason }) => log.push([resource.id, reason]));
  return log;
}

describe('idle timeout', () => {
  test('destroys resources idle too long, but never below min', async () => {
    vi.useFakeTimers();
    const factory = new FakeFactory();
    const pool = makePool(factory, { max: 4, min: 1, idleTimeoutMs: 1_000, housekeepingIntervalMs: 100 });
    const log = destroyLog(pool);
    const leases = await Promise.all([pool.acquire(), pool.acquire(), pool.acquire()]);
    for (const lease of leases) lease.release();
    expect(pool.stats().idle).toBe(3);
    await vi.advanceTimersByTimeAsync(900);
    expect(pool.stats().idle).toBe(3);
    await vi.advanceTimersByTimeAsync(300);
    expect(pool.stats()).toMatchObject({ size: 1, idle: 1 });
    expect(log.map(([, reason]) => reason)).toEqual(['idle', 'idle']);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(pool.stats().size).toBe(1);
  });

  test('a resource in use is not idle', async () => {
    vi.useFakeTimers();
    const pool = makePool(new FakeFactory(), { max: 1, idleTimeoutMs: 100, housekeepingIntervalMs: 10 });
    const lease = await pool.acquire();
    await vi.advanceTimersByTimeAsync(1_000);
    expect(pool.stats()).toMatchObject({ size: 1, inUse: 1 });
    lease.release();
    await vi.advanceTimersByTimeAsync(50);
    expect(pool.stats().size).toBe(1);
    await vi.advanceTimersByTimeAsync(100);
    expect(pool.stats().size).toBe(0);
  });
});

describe('max lifetime', () => {
  test('retires resources past their jittered lifetime, once idle, and refills min', async () => {
    vi.useFakeTimers();
    const factory = new FakeFactory();
    const pool = makePool(factory, {
      max: 10,
      min: 10,
      idleTimeoutMs: 0,
      maxLifetimeMs: 10_000,
      maxLifetimeJitterMs: 2_000,
      housekeepingIntervalMs: 50,
    });
    const retiredAt = new Map<number, number>();
    const start = performance.now();
    const reasons = new Set<DestroyReason>();
    pool.on('destroy', ({ resource, reason }) => {
      reasons.add(reason);
      retiredAt.set(resource.id, performance.now() - start);
    });
    await vi.advanceTimersByTimeAsync(10);
    expect(pool.stats().size).toBe(10);
    const held = await pool.acquire();
    await vi.advanceTimersByTimeAsync(10_100);
    // Every idle one retired inside the jitter window, not all at the same moment.
    const times = [...retiredAt.values()];
    expect(times).toHaveLength(9);
    for (const t of times) {
      expect(t).toBeGreaterThanOrEqual(8_000);
      expect(t).toBeLessThanOrEqual(10_100);
    }
    expect(new Set(times.map((t) => Math.floor(t / 50))).size).toBeGreaterThan(1);
    // The leased one was never taken from its holder; it retires when given back.
    expect(retiredAt.has(held.resource.id)).toBe(false);
    held.release();
    expect(retiredAt.has(held.resource.id)).toBe(true);
    await vi.advanceTimersByTimeAsync(10);
    expect(pool.stats()).toMatchObject({ size: 10, idle: 10 });
    expect([...reasons]).toEqual(['lifetime']);
  });
});

describe('validation on checkout', () => {
  test('validates a resource idle longer than the threshold; a failing one is replaced', async () => {
    vi.useFakeTimers();
    const factory = new FakeFactory();
    const broken = new Set<number>();
    const validated: number[] = [];
    const pool = makePool(factory, {
      max: 2,
      validateAfterIdleMs: 1_000,
      validate: (resource) => {
        validated.push(resource.id);
        return !broken.has(resource.id);
      },
    });
    const log = destroyLog(pool);
    const first = await pool.acquire();
    first.release();
    // Freshly used: no validation.
    const again = await pool.acquire();
    expect(validated).toEqual([]);
    again.release();
    await vi.advanceTimersByTimeAsync(1_500);
    broken.add(first.resource.id);
    const replaced = await pool.acquire();
    expect(validated).toEqual([1]);
    expect(replaced.resource.id).toBe(2);
    expect(log).toEqual([[1, 'validation']]);
    expect(pool.stats().totals.validationFailures).toBe(1);
    replaced.release();
    await vi.advanceTimersByTimeAsync(1_500);
    const ok = await pool.acquire();
    expect(ok.resource.id).toBe(2);
    expect(validated).toEqual([1, 2]);
    ok.release();
  });

  test('a validation that throws or hangs counts as failed', async () => {
    const factory = new FakeFactory();
    let mode: 'throw' | 'hang' | 'ok' = 'throw';
    const pool = makePool(factory, {
      max: 1,
      validateAfterIdleMs: 0,
      validateTimeoutMs: 20,
      validate: () => {
        if (mode === 'throw') throw new Error('socket closed');
        if (mode === 'hang') return new Promise<boolean>(() => {});
        return true;
      },
    });
    const errors: string[] = [];
    pool.on('error', ({ phase }) => errors.push(phase));
    (await pool.acquire()).release();
    const afterThrow = await pool.acquire();
    expect(afterThrow.resource.id).toBe(2);
    afterThrow.release();
    mode = 'hang';
    const afterHang = await pool.acquire();
    expect(afterHang.resource.id).toBe(3);
    afterHang.release();
    mode = 'ok';
    const kept = await pool.acquire();
    expect(kept.resource.id).toBe(3);
    kept.release();
    expect(errors).toEqual(['validate']);
    expect(pool.stats().totals.validationFailures).toBe(2);
  });

  test('after a failed validation the caller keeps its whole original deadline', async () => {
    vi.useFakeTimers();
    const factory = new FakeFactory();
    let first = true;
    const pool = makePool(factory, {
      max: 2,
      validateAfterIdleMs: 0,
      validateTimeoutMs: 60_000,
      validate: async () => {
        if (!first) return true;
        first = false;
        // Fails after 600 ms of a 1,000 ms deadline.
        await new Promise((resolve) => setTimeout(resolve, 600));
        return false;
      },
    });
    (await pool.acquire()).release();
    factory.closeGate(); // the replacement takes 300 ms to create
    setTimeout(() => factory.openGate(), 900);
    const caller = track(pool.acquire({ timeoutMs: 1_000 }));
    await vi.advanceTimersByTimeAsync(650);
    expect(caller.state()).toBe('pending');
    await vi.advanceTimersByTimeAsync(300);
    expect(caller.state()).toBe('fulfilled');
    expect(caller.value()!.resource.id).toBe(2);
    caller.value()!.release();
  });

  test('a retry still validates a resource that went stale while the failed validation ran', async () => {
    vi.useFakeTimers();
    const validated: number[] = [];
    const pool = makePool(new FakeFactory(), {
      max: 2,
      validateAfterIdleMs: 100,
      validateTimeoutMs: 60_000,
      validate: async (resource) => {
        validated.push(resource.id);
        if (resource.id !== 1) return true;
        await new Promise((resolve) => setTimeout(resolve, 1_000));
        return false;
      },
    });
    const [a, b] = await Promise.all([pool.acquire(), pool.acquire()]);
    a!.release();
    await vi.advanceTimersByTimeAsync(200);
    const caller = track(pool.acquire({ timeoutMs: 5_000 })); // takes stale resource 1
    await vi.advanceTimersByTimeAsync(10);
    b!.release(); // resource 2 comes back while 1 is being validated...
    await vi.advanceTimersByTimeAsync(1_000); // ...and sits idle for ~1 s before the retry
    expect(caller.state()).toBe('fulfilled');
    expect(caller.value()!.resource.id).toBe(2);
    expect(validated).toEqual([1, 2]);
    caller.value()!.release();
  });

  test('a caller that gives up during validation does not cost a healthy resource', async () => {
    const factory = new FakeFactory();
    let finishCheck: ((ok: boolean) => void) | undefined;
    const pool = makePool(factory, {
      max: 1,
      validateAfterIdleMs: 0,
      validate: () => new Promise<boolean>((resolve) => (finishCheck = resolve)),
    });
    (await pool.acquire()).release();
    const controller = new AbortController();
    const caller = track(pool.acquire({ signal: controller.signal }));
    await settle();
    controller.abort(new Error('client left'));
    await settle();
    expect(caller.state()).toBe('rejected');
    expect(pool.stats()).toMatchObject({ inUse: 1, size: 1 });
    finishCheck!(true);
    await settle();
    expect(pool.stats()).toMatchObject({ idle: 1, inUse: 0, size: 1 });
    expect(pool.stats().totals.validationFailures).toBe(0);
    expect(factory.destroyed.size).toBe(0);
  });

  test('validation counts against the caller deadline', async () => {
    const pool = makePool(new FakeFactory(), {
      max: 1,
      validateAfterIdleMs: 0,
      validateTimeoutMs: 60_000,
      validate: () => new Promise<boolean>(() => {}),
    });
    (await pool.acquire()).release();
    const error = await pool.acquire({ timeoutMs: 30 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PoolTimeoutError);
  });
});

describe('leak detection', () => {
  test('a lease held past leakDetectionMs raises a leak event with the stack of the acquire call', async () => {
    vi.useFakeTimers();
    const pool = makePool(new FakeFactory(), { max: 1, leakDetectionMs: 1_000 });
    const leaks: Array<{ id: number; heldMs: number; stack: string }> = [];
    pool.on('leak', ({ resource, heldMs, stack }) => leaks.push({ id: resource.id, heldMs, stack }));
    const lease = await acquireForTheReport(pool);
    await vi.advanceTimersByTimeAsync(900);
    expect(leaks).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(500);
    expect(leaks).toHaveLength(1);
    expect(leaks[0]!.id).toBe(lease.resource.id);
    expect(leaks[0]!.heldMs).toBeGreaterThanOrEqual(1_000);
    expect(leaks[0]!.stack).toContain('acquireForTheReport');
    expect(leaks[0]!.stack).not.toContain('Pool.acquire');
    // Reported once per lease.
    await vi.advanceTimersByTimeAsync(5_000);
    expect(leaks).toHaveLength(1);
    expect(pool.stats().totals.leaks).toBe(1);
    lease.release();
  });

  test('use() leases are tracked too', async () => {
    vi.useFakeTimers();
    const pool = makePool(new FakeFactory(), { max: 1, leakDetectionMs: 100 });
    const stacks: string[] = [];
    pool.on('leak', ({ stack }) => stacks.push(stack));
    const work = pool.use(() => new Promise((resolve) => setTimeout(resolve, 1_000)));
    await vi.advanceTimersByTimeAsync(1_000);
    await work;
    expect(stacks).toHaveLength(1);
    expect(stacks[0]).toContain('pool.lifecycle.test.ts');
  });
});

async function acquireForTheReport(pool: Pool<FakeResource>) {
  return pool.acquire();
}

describe('eviction', () => {
  test('evict() destroys an idle resource now and a leased one when it comes back', async () => {
    const factory = new FakeFactory();
    const pool = makePool(factory, { max: 2 });
    const log = destroyLog(pool);
    const errors: unknown[] = [];
    pool.on('error', ({ error, phase }) => errors.push([phase, error]));
    const [a, b] = await Promise.all([pool.acquire(), pool.acquire()]);
    a!.release();
    const socketClosed = new Error('Connection terminated unexpectedly');
    pool.evict(a!.resource, socketClosed);
    expect(log).toEqual([[1, 'evicted']]);
    expect(errors).toEqual([['evict', socketClosed]]);
    pool.evict(b!.resource);
    expect(pool.stats().inUse).toBe(1);
    b!.release();
    expect(log).toEqual([
      [1, 'evicted'],
      [2, 'evicted'],
    ]);
    expect(pool.stats()).toMatchObject({ size: 0, inUse: 0, idle: 0 });
    pool.evict({ id: 99 }); // unknown: ignored
  });
});
