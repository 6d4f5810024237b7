import { describe, expect, test } from 'vitest';
import {
  createPool,
  InvalidOptionError,
  type Lease,
  PoolQueueFullError,
  PoolTimeoutError,
  SluiceError,
} from '../../src/index.js';
import { FakeFactory, type FakeResource, settle, track, poolsClosedAfterEach } from './fake-resources.js';

const { makePool } = poolsClosedAfterEach();

describe('acquire', () => {
  test('hands out a resource and takes it back', async () => {
    const factory = new FakeFactory();
    const pool = makePool(factory, { max: 2 });
    const lease = await pool.acquire();
    expect(lease.resource).toEqual({ id: 1 });
    expect(pool.stats()).toMatchObject({ size: 1, inUse: 1, idle: 0, waiting: 0 });
    lease.release();
    expect(pool.stats()).toMatchObject({ size: 1, inUse: 0, idle: 1 });
    const again = await pool.acquire();
    expect(again.resource).toBe(lease.resource);
    again.release();
    expect(pool.stats().totals).toMatchObject({ acquired: 2, released: 2, created: 1 });
  });

  test('never lends more than max; the rest wait', async () => {
    const factory = new FakeFactory();
    const pool = makePool(factory, { max: 2 });
    const [a, b] = await Promise.all([pool.acquire(), pool.acquire()]);
    const third = track(pool.acquire());
    await settle();
    expect(third.state()).toBe('pending');
    expect(pool.stats()).toMatchObject({ size: 2, inUse: 2, waiting: 1, pendingCreates: 0 });
    a!.release();
    const lease = await third.promise;
    expect(lease.resource).toBe(a!.resource);
    lease.release();
    b!.release();
  });

  test('serves waiters first come, first served', async () => {
    const pool = makePool(new FakeFactory(), { max: 1 });
    const held = await pool.acquire();
    const order: number[] = [];
    const waiters = Array.from({ length: 5 }, (_, i) =>
      pool.acquire().then((lease) => {
        order.push(i);
        // Hand it on after a turn, so a later waiter could jump the queue if the pool let it.
        setImmediate(() => lease.release());
      }),
    );
    held.release();
    await Promise.all(waiters);
    expect(order).toEqual([0, 1, 2, 3, 4]);
  });

  test('a waiter whose deadline passes leaves the queue in the same tick it is rejected', async () => {
    const pool = makePool(new FakeFactory(), { max: 1 });
    const held = await pool.acquire();
    let waitingWhenRejected = -1;
    const late = pool.acquire({ timeoutMs: 20 }).catch((error: unknown) => {
      waitingWhenRejected = pool.stats().waiting;
      throw error;
    });
    const patient = track(pool.acquire({ timeoutMs: 10_000 }));
    expect(pool.stats().waiting).toBe(2);
    const error = await late.catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PoolTimeoutError);
    expect(waitingWhenRejected).toBe(1);
    expect(pool.stats().totals.timedOut).toBe(1);
    // The resource freed later goes to the caller still waiting, not the one that gave up.
    held.release();
    const lease = await patient.promise;
    expect(lease.resource).toBe(held.resource);
    lease.release();
  });

  test('an aborted waiter leaves the queue at once and rejects with signal.reason', async () => {
    const pool = makePool(new FakeFactory(), { max: 1 });
    const held = await pool.acquire();
    const controller = new AbortController();
    const aborted = track(pool.acquire({ signal: controller.signal }));
    const next = track(pool.acquire());
    expect(pool.stats().waiting).toBe(2);
    const reason = new Error('client went away');
    controller.abort(reason);
    expect(pool.stats().waiting).toBe(1);
    await settle();
    expect(aborted.state()).toBe('rejected');
    expect(aborted.error()).toBe(reason);
    held.release();
    const lease = await next.promise;
    expect(lease.resource).toBe(held.resource);
    expect(pool.stats().totals.aborted).toBe(1);
    lease.release();
  });

  test('an already-aborted signal rejects without queueing or taking a resource', async () => {
    const pool = makePool(new FakeFactory(), { max: 1 });
    const reason = new Error('too late');
    await expect(pool.acquire({ signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
    expect(pool.stats()).toMatchObject({ size: 0, waiting: 0, inUse: 0 });
  });

  test('a timeout on an exhausted pool says so, with the counts', async () => {
    const pool = makePool(new FakeFactory(), { max: 2, name: 'orders' });
    const leases = await Promise.all([pool.acquire(), pool.acquire()]);
    const error = (await pool.acquire({ timeoutMs: 10 }).catch((e: unknown) => e)) as PoolTimeoutError;
    expect(error).toBeInstanceOf(SluiceError);
    expect(error.code).toBe('POOL_TIMEOUT');
    expect(error.reason).toBe('exhausted');
    expect(error.message).toMatch(/^orders: timed out after \d+ ms/);
    expect(error.message).toContain('exhausted');
    expect(error.message).toContain('size 2/2');
    expect(error.message).toContain('in use 2');
    expect(error.message).toContain('waiting 0');
    expect(error.cause).toBeUndefined();
    for (const lease of leases) lease.release();
  });

  test('maxWaiting sheds load: beyond it acquire fails fast with POOL_QUEUE_FULL', async () => {
    const pool = makePool(new FakeFactory(), { max: 1, maxWaiting: 2 });
    const held = await pool.acquire();
    const queued = [track(pool.acquire()), track(pool.acquire())];
    const error = await pool.acquire().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PoolQueueFullError);
    expect((error as PoolQueueFullError).code).toBe('POOL_QUEUE_FULL');
    expect(pool.stats()).toMatchObject({ waiting: 2, totals: expect.objectContaining({ rejected: 1 }) });
    held.release();
    const first = await queued[0]!.promise;
    first.release();
    (await queued[1]!.promise).release();
  });

  test('maxWaiting 0 never queues: fail fast unless a resource is free', async () => {
    const pool = makePool(new FakeFactory(), { max: 1, maxWaiting: 0 });
    // Nothing idle and nothing may wait, not even for a create.
    await expect(pool.acquire()).rejects.toBeInstanceOf(PoolQueueFullError);
  });

  test('timeoutMs Infinity waits for ever (until a resource comes back)', async () => {
    const pool = makePool(new FakeFactory(), { max: 1, acquireTimeoutMs: 5 });
    const held = await pool.acquire();
    const patient = track(pool.acquire({ timeoutMs: Infinity }));
    await new Promise((resolve) => setTimeout(resolve, 30));
    expect(patient.state()).toBe('pending');
    held.release();
    (await patient.promise).release();
  });

  test('bad per-call options reject with INVALID_OPTION', async () => {
    const pool = makePool(new FakeFactory(), { max: 1 });
    for (const timeoutMs of [-1, Number.NaN, '5' as unknown as number]) {
      const error = await pool.acquire({ timeoutMs }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(InvalidOptionError);
      expect((error as InvalidOptionError).code).toBe('INVALID_OPTION');
      expect((error as InvalidOptionError).option).toBe('timeoutMs');
    }
    expect(pool.stats()).toMatchObject({ waiting: 0, inUse: 0 });
  });

  test('a signal that is not an AbortSignal is refused up front, leaving nothing queued', async () => {
    const pool = makePool(new FakeFactory(), { max: 1 });
    const held = await pool.acquire();
    const error = await pool.acquire({ signal: { aborted: false } as AbortSignal }).catch((e: unknown) => e);
    expect((error as InvalidOptionError).option).toBe('signal');
    expect(pool.stats().waiting).toBe(0);
    held.release();
  });

  test('option errors never echo a string value (it could be a connection string)', () => {
    const url = 'postgres://app:hunter2@db/orders';
    try {
      createPool({ ...new FakeFactory().options({ max: 1 }), max: url as unknown as number });
      expect.unreachable();
    } catch (error) {
      expect((error as Error).message).not.toContain('hunter2');
      expect((error as Error).message).toContain('got a string');
    }
  });

  test('bad pool options throw INVALID_OPTION naming the option', () => {
    const factory = new FakeFactory();
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ max: 0 }, 'max'],
      [{ max: 1.5 }, 'max'],
      [{ max: 2, min: 3 }, 'min'],
      [{ max: 2, acquireTimeoutMs: -5 }, 'acquireTimeoutMs'],
      [{ max: 2, idleTimeoutMs: Infinity }, 'idleTimeoutMs'],
      [{ max: 2, reuse: 'random' }, 'reuse'],
      [{ max: 2, maxLifetimeMs: 100, maxLifetimeJitterMs: 100 }, 'maxLifetimeJitterMs'],
      [{ max: 2, create: 'nope' }, 'create'],
      [{ max: 2, housekeepingIntervalMs: 2 ** 31 }, 'housekeepingIntervalMs'],
      [{ max: 2, createTimeoutMs: 0 }, 'createTimeoutMs'],
      [{ max: 2, validateTimeoutMs: 0 }, 'validateTimeoutMs'],
      [{ max: 2, acquireTimeoutMs: 2 ** 31 }, 'acquireTimeoutMs'],
    ];
    for (const [extra, option] of cases) {
      const make = (): unknown => createPool({ ...factory.options({ max: 1 }), ...extra } as never);
      expect(make).toThrow(InvalidOptionError);
      try {
        make();
      } catch (error) {
        expect((error as InvalidOptionError).option).toBe(option);
      }
    }
    expect(() => createPool({ create: factory.create, destroy: factory.destroy } as never)).toThrow(/max/);
  });

  test('fifo reuse hands out the longest-idle resource; lifo the most recent', async () => {
    for (const reuse of ['fifo', 'lifo'] as const) {
      const pool = makePool(new FakeFactory(), { max: 2, reuse });
      const [a, b] = (await Promise.all([pool.acquire(), pool.acquire()])) as [Lease<FakeResource>, Lease<FakeResource>];
      a.release();
      b.release();
      const next = await pool.acquire();
      expect(next.resource).toBe(reuse === 'fifo' ? a.resource : b.resource);
      next.release();
    }
  });

  test('emits acquire and release events', async () => {
    const pool = makePool(new FakeFactory(), { max: 1 });
    const seen: string[] = [];
    pool.on('acquire', ({ resource }) => seen.push(`acquire ${resource.id}`));
    pool.on('release', ({ resource }) => seen.push(`release ${resource.id}`));
    const lease = await pool.acquire();
    lease.release();
    expect(seen).toEqual(['acquire 1', 'release 1']);
  });
});

describe('timeoutMs 0', () => {
  test('succeeds only if a resource is idle now: no queueing, no create', async () => {
    const factory = new FakeFactory();
    const pool = makePool(factory, { max: 2 });
    await expect(pool.acquire({ timeoutMs: 0 })).rejects.toBeInstanceOf(PoolTimeoutError);
    expect(factory.calls).toBe(0);
    expect(pool.stats()).toMatchObject({ waiting: 0, pendingCreates: 0 });
    (await pool.acquire()).release();
    const lease = await pool.acquire({ timeoutMs: 0 });
    expect(lease.resource.id).toBe(1);
    lease.release();
  });
});
