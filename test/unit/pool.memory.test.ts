import { setImmediate as nextTurn } from 'node:timers/promises';
import { afterEach, describe, expect, test } from 'vitest';
import { createPool, type Pool, PoolTimeoutError } from '../../src/index.js';
import { FakeFactory, type FakeResource } from './fake-resources.js';

const gc = (globalThis as { gc?: () => void }).gc;

const pools: Pool<FakeResource>[] = [];
afterEach(async () => {
  await Promise.all(pools.splice(0).map((pool) => pool.close()));
});

function heapUsed(): number {
  for (let i = 0; i < 3; i++) gc!();
  return process.memoryUsage().heapUsed;
}

/** 10,000 callers at once on a pool of 10: most are served, some time out, some abort. */
async function stampede(
  pool: Pool<FakeResource>,
  callers = 10_000,
): Promise<{ served: number; timedOut: number; aborted: number }> {
  const outcome = { served: 0, timedOut: 0, aborted: 0 };
  const calls = Array.from({ length: callers }, (_, i) => {
    const controller = new AbortController();
    if (i % 7 === 0) setTimeout(() => controller.abort(new Error('gave up')), 1);
    const timeoutMs = i % 11 === 0 ? 2 : 60_000;
    return pool
      .use(() => nextTurn(), { signal: controller.signal, timeoutMs })
      .then(
        () => void outcome.served++,
        (error: unknown) => {
          if (error instanceof PoolTimeoutError) outcome.timedOut++;
          else if ((error as Error).message === 'gave up') outcome.aborted++;
          else throw error;
        },
      );
  });
  await Promise.all(calls);
  return outcome;
}

describe('a stampede', () => {
  test('10,000 waiters on a pool of 10 all settle, and memory returns to where it started', async () => {
    expect(gc, 'run with --expose-gc (vitest.config.ts sets it)').toBeTypeOf('function');
    const pool = createPool(new FakeFactory().options({ max: 10 }));
    pools.push(pool);

    // A small round warms the JIT and the pool along the same paths; measure from after it.
    const warmup = await stampede(pool, 500);
    expect(warmup.served + warmup.timedOut + warmup.aborted).toBe(500);
    const baseline = heapUsed();

    for (let round = 0; round < 3; round++) {
      const outcome = await stampede(pool);
      expect(outcome.served + outcome.timedOut + outcome.aborted).toBe(10_000);
      expect(outcome.served).toBeGreaterThan(0);
      expect(outcome.timedOut).toBeGreaterThan(0);
      expect(outcome.aborted).toBeGreaterThan(0);
      expect(pool.stats()).toMatchObject({ waiting: 0, inUse: 0, size: 10, idle: 10 });
    }
    const after = heapUsed();
    // A waiter costs several hundred bytes; 30,000 retained would be megabytes.
    expect(after - baseline).toBeLessThan(1_000_000);
    expect(pool.stats().totals.acquired).toBe(pool.stats().totals.released);
  });
});
