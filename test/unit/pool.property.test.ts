/**
 * Property-based tests of the pool (src/pool), on a fake clock.
 *
 * The main properties run random interleavings of acquire (no deadline, a deadline, the
 * pool default, a signal, an already-aborted signal), release, destroy, double release,
 * abort, eviction, time passing, transient and permanent create failures and close,
 * against pools of 1..4 with random create/destroy/validate delays, and check after every
 * step, against a model of what the test holds:
 * - size + pendingCreates <= max, inUse + idle + pendingCreates <= max, inUse + idle == size;
 * - no resource lent to two holders, nor lent once destroyed; idle > 0 implies nobody waits;
 * - waiting == the acquires still pending; inUse == the leases held; the totals add up;
 * - waiters served first come, first served; no caller pending past its deadline;
 * - each rejection of the right type and code, at the right time (PoolTimeoutError,
 *   signal.reason, PoolClosedError, PoolQueueFullError, PoolCreateError; LeaseReleasedError
 *   on a double release, which changes no count);
 * - once everything is given back, every waiter gets served; after close() and the timers
 *   drained, every acquire has settled, every created resource was destroyed exactly once,
 *   and no timer is left.
 * Focused properties pin FIFO order, double release, maxWaiting, and checkout validation
 * (no spinning, no healthy resource lost to an impatient caller, the whole deadline kept).
 *
 * The clock: vitest's fake timers replace `globalThis.performance`, which the pool reads
 * per call. The 'node:perf_hooks' export is a different object once the fake is
 * installed, so each run also points its `now` at the fake clock: the test reads time
 * through it, and the pool stays on fake time should it import from perf_hooks again
 * (both checked by the first test). `Math.random` (retry jitter, lifetime jitter) is
 * pinned so that a counterexample replays identically.
 */
import { performance as hooksPerformance } from 'node:perf_hooks';
import fc from 'fast-check';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  LeaseReleasedError,
  PoolClosedError,
  PoolQueueFullError,
  PoolTimeoutError,
  createPool,
  type Lease,
  type Pool,
} from '../../src/pool/index.js';
import {
  withFakeTime,
  flush,
  advance,
  clock,
  type Resource,
  RUNAWAY_CALLS,
  configArb,
  commandsArb,
  runScenario,
} from './pool-model.js';

afterEach(() => {
  vi.restoreAllMocks();
  vi.useRealTimers();
});

// --- small helpers for the focused properties ---------------------------------------------

/** A promise's outcome, readable at any time: no test awaits a pool promise that might never settle. */
interface Tracked<T> {
  state: 'pending' | 'resolved' | 'rejected';
  value: T | undefined;
  error: unknown;
  settledAt: number;
}

function track<T>(promise: Promise<T>): Tracked<T> {
  const tracked: Tracked<T> = { state: 'pending', value: undefined, error: undefined, settledAt: NaN };
  promise.then(
    (value) => {
      tracked.state = 'resolved';
      tracked.value = value;
      tracked.settledAt = clock();
    },
    (error: unknown) => {
      tracked.state = 'rejected';
      tracked.error = error;
      tracked.settledAt = clock();
    },
  );
  return tracked;
}

/** Acquires with a resource at hand (idle, or a synchronous create): it must be served at once. */
async function acquireNow(pool: Pool<Resource>): Promise<Lease<Resource>> {
  const acquired = track(pool.acquire());
  await flush();
  expect(acquired.state, 'acquire with a resource at hand').toBe('resolved');
  return acquired.value!;
}

/** Closes the pool, lets `ms` of fake time pass, and checks close() finished. */
async function closeWithin(pool: Pool<Resource>, ms: number): Promise<void> {
  const closing = track(pool.close());
  await advance(ms);
  expect(closing.state, 'close() finished').toBe('resolved');
}

// --- the properties -----------------------------------------------------------------------

describe('pool properties (fast-check)', () => {
  it('the fake clock drives performance.now() (global and perf_hooks) and the pool deadlines', async () => {
    await withFakeTime(async () => {
      const start = hooksPerformance.now();
      const globalStart = globalThis.performance.now();
      await vi.advanceTimersByTimeAsync(1234);
      expect(hooksPerformance.now() - start).toBe(1234);
      expect(globalThis.performance.now() - globalStart).toBe(1234);

      // And the pool's deadlines follow it.
      const pool = createPool<Resource>({ max: 1, create: () => ({ id: 0 }), destroy: () => undefined });
      const lease = await acquireNow(pool);
      const waiting = track(pool.acquire({ timeoutMs: 100 }));
      await advance(99);
      expect(waiting.state).toBe('pending');
      expect(pool.stats().waiting).toBe(1);
      await advance(1);
      expect(waiting.error).toBeInstanceOf(PoolTimeoutError);
      expect((waiting.error as PoolTimeoutError).waitedMs).toBe(100);
      expect(waiting.settledAt).toBe(start + 1234 + 100);
      lease.release();
      await closeWithin(pool, 0);
    });
  });

  it('random interleavings keep every invariant, and close cleans up', async () => {
    await fc.assert(fc.asyncProperty(configArb(false), commandsArb, runScenario), { numRuns: 200 });
  });

  it('the same, with validation on checkout (delayed, failing, timing out)', async () => {
    await fc.assert(fc.asyncProperty(configArb(true), commandsArb, runScenario), { numRuns: 200 });
  });

  it('waiters are served first come, first served, whoever leaves the queue early', async () => {
    // Every resource held; callers queue, some with deadlines, some abort; each release
    // must go to the oldest caller still waiting.
    const callerArb = fc.record({
      timeoutMs: fc.oneof(fc.constant(Infinity), fc.integer({ min: 1, max: 100 })),
      abortAtMs: fc.oneof(fc.constant(Infinity), fc.integer({ min: 0, max: 100 })),
    });
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 3 }),
        fc.array(callerArb, { minLength: 1, maxLength: 8 }),
        fc.array(fc.integer({ min: 0, max: 40 }), { minLength: 1, maxLength: 12 }),
        async (max, callers, releaseGaps) => {
          await withFakeTime(async () => {
            let id = 0;
            const pool = createPool<Resource>({ max, create: () => ({ id: id++ }), destroy: () => undefined });
            const held: Lease<Resource>[] = [];
            for (let n = 0; n < max; n++) held.push(await acquireNow(pool));
            const served: number[] = [];
            const left = new Set<number>();
            callers.forEach((caller, seq) => {
              const controller = new AbortController();
              if (caller.abortAtMs !== Infinity) setTimeout(() => controller.abort(), caller.abortAtMs);
              pool.acquire({ timeoutMs: caller.timeoutMs, signal: controller.signal }).then(
                (lease) => {
                  served.push(seq);
                  held.push(lease);
                },
                () => left.add(seq),
              );
            });
            for (const gap of releaseGaps) {
              await advance(gap);
              held.shift()?.release();
              await flush();
              // Served in order of arrival, and nobody older than a served caller still waits.
              expect(served).toEqual([...served].sort((a, b) => a - b));
              const newest = served.at(-1) ?? -1;
              for (let seq = 0; seq < newest; seq++) {
                expect(served.includes(seq) || left.has(seq), `caller ${seq} skipped`).toBe(true);
              }
            }
            const closing = track(pool.close());
            for (const lease of held) lease.release();
            await advance(200);
            expect(closing.state).toBe('resolved');
            expect(served.length + left.size, 'every caller answered').toBe(callers.length);
          });
        },
      ),
      { numRuns: 100 },
    );
  });

  it('a second release or destroy throws LeaseReleasedError and leaves the counts alone', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 4 }),
        fc.array(fc.record({ lease: fc.nat({ max: 7 }), destroy: fc.boolean() }), { minLength: 1, maxLength: 20 }),
        async (max, giveBacks) => {
          await withFakeTime(async () => {
            let id = 0;
            const destroyed: number[] = [];
            const pool = createPool<Resource>({
              max,
              create: () => ({ id: id++ }),
              destroy: (r) => {
                destroyed.push(r.id);
              },
            });
            const leases: Lease<Resource>[] = [];
            for (let n = 0; n < max; n++) leases.push(await acquireNow(pool));
            const returned = new Set<Lease<Resource>>();
            for (const step of giveBacks) {
              const lease = leases[step.lease % leases.length]!;
              const before = pool.stats();
              const destroyedBefore = destroyed.length;
              if (returned.has(lease)) {
                let thrown: unknown = undefined;
                try {
                  if (step.destroy) lease.destroy();
                  else lease.release();
                } catch (error) {
                  thrown = error;
                }
                expect(thrown).toBeInstanceOf(LeaseReleasedError);
                expect((thrown as LeaseReleasedError).code).toBe('LEASE_RELEASED');
                expect(pool.stats()).toEqual(before);
                expect(destroyed.length).toBe(destroyedBefore);
              } else {
                if (step.destroy) lease.destroy();
                else lease.release();
                returned.add(lease);
                const after = pool.stats();
                expect(after.inUse).toBe(before.inUse - 1);
                expect(after.totals.released).toBe(before.totals.released + 1);
                expect(destroyed.length).toBe(destroyedBefore + (step.destroy ? 1 : 0));
              }
              expect(lease.released).toBe(true);
              const s = pool.stats();
              expect(s.inUse).toBe(leases.length - returned.size);
              expect(s.inUse + s.idle).toBe(s.size);
              expect(s.size).toBe(id - destroyed.length);
            }
            for (const lease of leases) if (!returned.has(lease)) lease.release();
            await closeWithin(pool, 0);
            expect([...destroyed].sort((a, b) => a - b)).toEqual([...Array(id).keys()]);
          });
        },
      ),
      { numRuns: 100 },
    );
  });

  it('maxWaiting sheds exactly the callers beyond the queue bound', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 3 }),
        fc.integer({ min: 0, max: 4 }),
        fc.integer({ min: 0, max: 10 }),
        async (max, maxWaiting, extra) => {
          await withFakeTime(async () => {
            let id = 0;
            // Warm (min = max): with maxWaiting 0 nobody may even wait for a create.
            const pool = createPool<Resource>({
              max,
              min: max,
              maxWaiting,
              create: () => ({ id: id++ }),
              destroy: () => undefined,
            });
            await flush();
            expect(pool.stats().idle).toBe(max);
            const leases: Lease<Resource>[] = [];
            for (let n = 0; n < max; n++) leases.push(await acquireNow(pool));
            const outcomes = Array.from({ length: extra }, () => track(pool.acquire({ timeoutMs: Infinity })));
            await flush();
            const s = pool.stats();
            expect(s.waiting).toBe(Math.min(extra, maxWaiting));
            expect(s.totals.rejected).toBe(Math.max(0, extra - maxWaiting));
            const closing = track(pool.close());
            for (const lease of leases) lease.release();
            await advance(0);
            expect(closing.state).toBe('resolved');
            outcomes.forEach((outcome, n) => {
              expect(outcome.state).toBe('rejected');
              if (n < maxWaiting) {
                expect(outcome.error).toBeInstanceOf(PoolClosedError);
                expect((outcome.error as PoolClosedError).code).toBe('POOL_CLOSED');
              } else {
                expect(outcome.error).toBeInstanceOf(PoolQueueFullError);
                expect((outcome.error as PoolQueueFullError).code).toBe('POOL_QUEUE_FULL');
              }
            });
          });
        },
      ),
      { numRuns: 60 },
    );
  });

  it('a failing checkout validation never spins the event loop (min keeps refilling idle)', async () => {
    // A synchronous factory is allowed (`create` may return R). Every validation fails;
    // `min` makes the pool replace each retired resource at once.
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 4 }),
        fc.integer({ min: 0, max: 4 }),
        fc.oneof(fc.constant(Infinity), fc.integer({ min: 1, max: 100 })),
        async (max, minRaw, timeoutMs) => {
          await withFakeTime(async () => {
            const min = Math.min(minRaw, max);
            let id = 0;
            let validations = 0;
            let spun = false;
            const pool = createPool<Resource>({
              max,
              min,
              create: () => ({ id: id++ }),
              destroy: () => undefined,
              validateAfterIdleMs: 0,
              validate: () => {
                // Fails, until this guard breaks a loop that would otherwise never end.
                if (++validations >= RUNAWAY_CALLS) spun = true;
                return spun;
              },
            });
            await flush(); // warm up to min
            (await acquireNow(pool)).release(); // at least one idle resource
            const caller = track(pool.acquire({ timeoutMs }));
            await flush();
            expect(spun, `${validations} validations at one instant: the caller spins in microtasks`).toBe(false);
            await advance(timeoutMs === Infinity ? 10 : timeoutMs);
            // Served by a fresh resource, or timed out at its deadline: either way, answered.
            if (caller.state === 'resolved') caller.value!.release();
            else expect(caller.error).toBeInstanceOf(PoolTimeoutError);
            await closeWithin(pool, 10_000);
          });
        },
      ),
      { numRuns: 40 },
    );
  });

  it('a caller giving up during checkout validation does not cost the pool a healthy resource', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 2, max: 50 }),
        fc.integer({ min: 1, max: 49 }),
        fc.boolean(),
        async (validateMs, giveUpAtRaw, byAbort) => {
          await withFakeTime(async () => {
            const giveUpAt = Math.min(giveUpAtRaw, validateMs - 1);
            let id = 0;
            const destroyed: number[] = [];
            const pool = createPool<Resource>({
              max: 1,
              create: () => ({ id: id++ }),
              destroy: (r) => {
                destroyed.push(r.id);
              },
              validateAfterIdleMs: 0,
              validateTimeoutMs: 1_000,
              validate: () => new Promise<boolean>((resolve) => setTimeout(() => resolve(true), validateMs)),
            });
            (await acquireNow(pool)).release();
            const controller = new AbortController();
            const reason = new Error('caller gave up');
            if (byAbort) setTimeout(() => controller.abort(reason), giveUpAt);
            const caller = track(
              pool.acquire(byAbort ? { signal: controller.signal, timeoutMs: Infinity } : { timeoutMs: giveUpAt }),
            );
            await advance(giveUpAt);
            // Answered when it gave up, not when the check ends.
            expect(caller.state).toBe('rejected');
            if (byAbort) expect(caller.error).toBe(reason);
            else expect(caller.error).toBeInstanceOf(PoolTimeoutError);
            await advance(validateMs);
            // The check passed: the resource stays, and no validation failed.
            expect(destroyed).toEqual([]);
            const s = pool.stats();
            expect({ size: s.size, idle: s.idle, inUse: s.inUse, failures: s.totals.validationFailures }).toEqual({
              size: 1,
              idle: 1,
              inUse: 0,
              failures: 0,
            });
            await closeWithin(pool, 0);
            expect(destroyed).toEqual([0]);
          });
        },
      ),
      { numRuns: 60 },
    );
  });

  it('after a failed checkout validation the caller keeps its whole deadline', async () => {
    // One resource, idle; validating it takes V ms and fails; a replacement takes C ms to
    // create. The caller (deadline T) gets the replacement iff V + C < T, else times out at T.
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 60 }),
        fc.integer({ min: 1, max: 60 }),
        fc.integer({ min: 1, max: 150 }),
        async (validateMs, createMs, timeoutMs) => {
          fc.pre(validateMs + createMs !== timeoutMs && validateMs !== timeoutMs);
          await withFakeTime(async () => {
            let id = 0;
            const pool = createPool<Resource>({
              max: 1,
              create: () => new Promise<Resource>((resolve) => setTimeout(() => resolve({ id: id++ }), createMs)),
              destroy: () => undefined,
              validateAfterIdleMs: 0,
              validateTimeoutMs: 1_000,
              // Only the first resource is validated: the replacement goes straight to the waiter.
              validate: () => new Promise<boolean>((resolve) => setTimeout(() => resolve(false), validateMs)),
            });
            const first = track(pool.acquire());
            await advance(createMs);
            expect(first.state).toBe('resolved');
            first.value!.release();
            const startedAt = clock();
            const caller = track(pool.acquire({ timeoutMs }));
            await advance(timeoutMs + 1);
            if (validateMs + createMs < timeoutMs) {
              expect(caller.state).toBe('resolved');
              expect(caller.settledAt - startedAt).toBe(validateMs + createMs);
              caller.value!.release();
            } else {
              expect(caller.error).toBeInstanceOf(PoolTimeoutError);
              expect(caller.settledAt - startedAt, 'timed out before its deadline').toBe(timeoutMs);
              expect((caller.error as PoolTimeoutError).waitedMs).toBeGreaterThanOrEqual(timeoutMs);
            }
            await closeWithin(pool, 1_000);
          });
        },
      ),
      { numRuns: 80 },
    );
  });
});
