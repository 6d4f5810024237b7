import { describe, expect, test } from 'vitest';
import { LeaseReleasedError, SluiceError } from '../../src/index.js';
import { FakeFactory, type FakeResource, poolsClosedAfterEach } from './fake-resources.js';

const { makePool } = poolsClosedAfterEach();

describe('leases', () => {
  test('a second release throws LEASE_RELEASED and the counts stay right', async () => {
    const pool = makePool(new FakeFactory(), { max: 2 });
    const lease = await pool.acquire();
    lease.release();
    expect(lease.released).toBe(true);
    const before = pool.stats();
    expect(() => lease.release()).toThrow(LeaseReleasedError);
    expect(() => lease.destroy()).toThrow(LeaseReleasedError);
    try {
      lease.release();
    } catch (error) {
      expect(error).toBeInstanceOf(SluiceError);
      expect((error as SluiceError).code).toBe('LEASE_RELEASED');
    }
    expect(pool.stats()).toEqual(before);
    expect(before).toMatchObject({ size: 1, idle: 1, inUse: 0 });
    // The resource is lent to exactly one caller at a time afterwards.
    const [a, b] = await Promise.all([pool.acquire(), pool.acquire()]);
    expect(a!.resource).not.toBe(b!.resource);
    a!.release();
    b!.release();
  });

  test('a stale lease cannot release the resource out from under its next holder', async () => {
    const pool = makePool(new FakeFactory(), { max: 1 });
    const first = await pool.acquire();
    first.release();
    const second = await pool.acquire();
    expect(second.resource).toBe(first.resource);
    expect(() => first.release()).toThrow(LeaseReleasedError);
    expect(pool.stats()).toMatchObject({ inUse: 1, idle: 0 });
    second.release();
  });

  test('destroy() destroys the resource instead of returning it', async () => {
    const factory = new FakeFactory();
    const pool = makePool(factory, { max: 1 });
    const lease = await pool.acquire();
    lease.destroy();
    expect(factory.destroyed.get(lease.resource.id)).toBe(1);
    expect(pool.stats()).toMatchObject({ size: 0, inUse: 0 });
    const next = await pool.acquire();
    expect(next.resource).not.toBe(lease.resource);
    next.release();
  });

  test('`using` releases the lease at the end of the block', async () => {
    const pool = makePool(new FakeFactory(), { max: 1 });
    {
      const lease = await pool.acquire();
      lease[Symbol.dispose]();
      expect(lease.released).toBe(true);
      // Disposing after an explicit release is a no-op, not an error.
      expect(() => lease[Symbol.dispose]()).not.toThrow();
    }
    expect(pool.stats()).toMatchObject({ idle: 1, inUse: 0 });
  });
});

describe('use()', () => {
  test('releases on success and returns the result', async () => {
    const pool = makePool(new FakeFactory(), { max: 1 });
    const result = await pool.use((resource) => resource.id * 10);
    expect(result).toBe(10);
    expect(pool.stats()).toMatchObject({ idle: 1, inUse: 0 });
    expect(pool.stats().totals).toMatchObject({ acquired: 1, released: 1, destroyed: 0 });
  });

  test('releases on error and rethrows it', async () => {
    const factory = new FakeFactory();
    const pool = makePool(factory, { max: 1 });
    const failure = new Error('syntax error at or near "SELEC"');
    await expect(pool.use(() => Promise.reject(failure))).rejects.toBe(failure);
    expect(pool.stats()).toMatchObject({ size: 1, idle: 1, inUse: 0 });
    expect(factory.destroyed.size).toBe(0);
  });

  test('destroys the resource when isFatalError says the error is fatal for it', async () => {
    const factory = new FakeFactory();
    const seen: Array<[unknown, FakeResource]> = [];
    const pool = makePool(factory, {
      max: 1,
      isFatalError: (error, resource) => {
        seen.push([error, resource]);
        return (error as { code?: string }).code === 'ECONNRESET';
      },
    });
    const reset = Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' });
    await expect(pool.use(() => Promise.reject(reset))).rejects.toBe(reset);
    expect(seen).toEqual([[reset, { id: 1 }]]);
    expect(factory.destroyed.get(1)).toBe(1);
    expect(pool.stats()).toMatchObject({ size: 0, inUse: 0 });
    expect(await pool.use((resource) => resource.id)).toBe(2);
  });

  test('an isFatalError that throws destroys the resource and rethrows the original error', async () => {
    const factory = new FakeFactory();
    const pool = makePool(factory, {
      max: 1,
      isFatalError: () => {
        throw new TypeError('classifier bug');
      },
    });
    const phases: string[] = [];
    pool.on('error', ({ phase }) => phases.push(phase));
    const failure = new Error('query failed');
    await expect(pool.use(() => Promise.reject(failure))).rejects.toBe(failure);
    expect(phases).toEqual(['hook']);
    expect(factory.destroyed.get(1)).toBe(1);
    expect(pool.stats()).toMatchObject({ inUse: 0, size: 0 });
  });

  test('passes the caller signal to the work, and one that never aborts otherwise', async () => {
    const pool = makePool(new FakeFactory(), { max: 1 });
    const controller = new AbortController();
    expect(await pool.use((_, { signal }) => signal, { signal: controller.signal })).toBe(controller.signal);
    const fallback = await pool.use((_, { signal }) => signal);
    expect(fallback).toBeInstanceOf(AbortSignal);
    expect(fallback.aborted).toBe(false);
  });

  test('rejects like acquire when it cannot get a resource, without running the work', async () => {
    const pool = makePool(new FakeFactory(), { max: 1 });
    const held = await pool.acquire();
    let ran = false;
    const error = await pool
      .use(
        () => {
          ran = true;
        },
        { timeoutMs: 10 },
      )
      .catch((e: unknown) => e);
    expect((error as SluiceError).code).toBe('POOL_TIMEOUT');
    expect(ran).toBe(false);
    held.release();
  });
});

describe('events', () => {
  test('a listener that throws does not corrupt the pool', async () => {
    const pool = makePool(new FakeFactory(), { max: 1 });
    const uncaught: unknown[] = [];
    const onUncaught = (error: unknown): void => void uncaught.push(error);
    const listeners = process.listeners('uncaughtException');
    process.removeAllListeners('uncaughtException');
    process.on('uncaughtException', onUncaught);
    try {
      pool.on('release', () => {
        throw new Error('listener bug');
      });
      const lease = await pool.acquire();
      lease.release();
      await new Promise((resolve) => setImmediate(resolve));
      expect(pool.stats()).toMatchObject({ idle: 1, inUse: 0 });
      expect(uncaught).toHaveLength(1);
    } finally {
      process.off('uncaughtException', onUncaught);
      for (const listener of listeners) process.on('uncaughtException', listener);
    }
  });

  test('off() removes a listener added with once()', async () => {
    const pool = makePool(new FakeFactory(), { max: 1 });
    let calls = 0;
    const listener = (): void => void calls++;
    pool.once('acquire', listener);
    pool.off('acquire', listener);
    (await pool.acquire()).release();
    expect(calls).toBe(0);
  });

  test('off() and once() work; an unheard error event does not throw', async () => {
    const factory = new FakeFactory();
    factory.failures.push(new Error('boom'));
    const pool = makePool(factory, { max: 1, createRetryDelayMs: 1 });
    const releases: number[] = [];
    const listener = ({ resource }: { resource: FakeResource }): void => void releases.push(resource.id);
    pool.on('release', listener);
    let creates = 0;
    pool.once('create', () => creates++);
    const lease = await pool.acquire();
    lease.release();
    pool.off('release', listener);
    (await pool.acquire()).release();
    expect(releases).toEqual([1]);
    expect(creates).toBe(1);
  });
});
