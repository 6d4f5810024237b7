/**
 * The model behind the pool's property-based tests (pool.property.test.ts): a fake clock,
 * generated pool configurations and command sequences, and a harness that runs them
 * against a real pool and checks every invariant after every step.
 */
import { performance as hooksPerformance } from 'node:perf_hooks';
import fc from 'fast-check';
import { expect, vi } from 'vitest';
import {
  LeaseReleasedError,
  PoolClosedError,
  PoolCreateError,
  PoolQueueFullError,
  PoolTimeoutError,
  createPool,
  type Lease,
  type Pool,
} from '../../src/pool/index.js';

// --- the fake clock ---------------------------------------------------------------------

const FAKED = ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'performance', 'Date'] as const;

/** Runs `body` with fake timers that also drive the pool's perf_hooks clock, then restores everything. */
export async function withFakeTime<T>(body: () => Promise<T>): Promise<T> {
  vi.useFakeTimers({ toFake: [...FAKED] });
  const fakePerformance = globalThis.performance;
  if (fakePerformance === hooksPerformance) {
    vi.useRealTimers();
    throw new Error('fake timers did not replace globalThis.performance');
  }
  const nowSpy = vi.spyOn(hooksPerformance, 'now').mockImplementation(() => fakePerformance.now());
  const randomSpy = vi.spyOn(Math, 'random').mockReturnValue(0.5);
  try {
    return await body();
  } finally {
    randomSpy.mockRestore();
    nowSpy.mockRestore();
    vi.useRealTimers();
  }
}

/** Lets every pending microtask run. `setImmediate` is not faked, so this is real. */
export async function flush(): Promise<void> {
  await new Promise<void>((resolve) => setImmediate(resolve));
  await new Promise<void>((resolve) => setImmediate(resolve));
}

export async function advance(ms: number): Promise<void> {
  await vi.advanceTimersByTimeAsync(ms);
  await flush();
}

export const clock = (): number => hooksPerformance.now();

// --- the generated scenario ---------------------------------------------------------------

export interface Resource {
  readonly id: number;
}

interface Config {
  readonly max: number;
  readonly min: number;
  readonly maxWaiting: number;
  readonly reuse: 'lifo' | 'fifo';
  readonly acquireTimeoutMs: number;
  /** Per create call, cycled: -1 means `create` returns synchronously. */
  readonly createDelays: readonly number[];
  readonly createTimeoutMs: number;
  /** Whether the factory gives up when its signal aborts (close, create timeout). */
  readonly honorsAbort: boolean;
  readonly createRetryDelayMs: number;
  readonly destroyDelayMs: number;
  readonly destroyFails: boolean;
  readonly idleTimeoutMs: number;
  readonly maxLifetimeMs: number;
  readonly housekeepingIntervalMs: number;
  readonly closeTimeoutMs: number;
  /** Checkout validation, or none. Delays and results are cycled per call; -1 is synchronous. */
  readonly validation:
    | {
        readonly delays: readonly number[];
        readonly results: readonly boolean[];
        readonly afterIdleMs: number;
        readonly timeoutMs: number;
      }
    | undefined;
  /** Before the final close: give everything back and check every waiter gets served. */
  readonly drainBeforeClose: boolean;
}

type AcquireMode = 'none' | 'timeout' | 'default' | 'signal' | 'signalTimeout' | 'preAborted';

type Command =
  | { readonly t: 'acquire'; readonly mode: AcquireMode; readonly timeoutMs: number }
  | { readonly t: 'release'; readonly i: number }
  | { readonly t: 'destroy'; readonly i: number }
  | { readonly t: 'doubleRelease'; readonly i: number; readonly viaDestroy: boolean }
  | { readonly t: 'abort'; readonly i: number }
  | { readonly t: 'evict'; readonly i: number }
  | { readonly t: 'advance'; readonly ms: number }
  | { readonly t: 'failCreates'; readonly n: number; readonly permanent: boolean }
  | { readonly t: 'close' };

const MAX_CREATE_DELAY = 60;
const RETRY_MAX_DELAY = 40;
const MAX_VALIDATE_DELAY = 40;
/**
 * Create + validate calls at one instant of the fake clock beyond which the pool is
 * spinning: a microtask loop that never lets a timer (not even a deadline) run. The
 * harness then records a violation and breaks the loop, so the property fails with a
 * counterexample instead of hanging until the heap runs out.
 */
export const RUNAWAY_CALLS = 1_000;

const validationArb = fc.record({
  delays: fc.array(fc.oneof(fc.constant(-1), fc.integer({ min: 0, max: MAX_VALIDATE_DELAY })), {
    minLength: 1,
    maxLength: 3,
  }),
  results: fc.array(fc.boolean(), { minLength: 1, maxLength: 3 }),
  afterIdleMs: fc.integer({ min: 0, max: 30 }),
  timeoutMs: fc.oneof(fc.constant(Infinity), fc.integer({ min: 1, max: 60 })),
});

/** A pool configuration; with `validation`, every pool validates on checkout. */
export const configArb = (validation: boolean): fc.Arbitrary<Config> =>
  fc
    .record({
      max: fc.integer({ min: 1, max: 4 }),
      minRaw: fc.integer({ min: 0, max: 2 }),
      maxWaiting: fc.oneof(fc.constant(Infinity), fc.integer({ min: 0, max: 3 })),
      reuse: fc.constantFrom('lifo' as const, 'fifo' as const),
      acquireTimeoutMs: fc.oneof(fc.constant(Infinity), fc.integer({ min: 0, max: 200 })),
      createDelays: fc.array(fc.oneof(fc.constant(-1), fc.integer({ min: 0, max: MAX_CREATE_DELAY })), {
        minLength: 1,
        maxLength: 4,
      }),
      createTimeoutMs: fc.oneof(fc.constant(Infinity), fc.integer({ min: 5, max: 80 })),
      honorsAbort: fc.boolean(),
      createRetryDelayMs: fc.integer({ min: 1, max: 10 }),
      destroyDelayMs: fc.integer({ min: 0, max: 30 }),
      destroyFails: fc.boolean(),
      idleTimeoutMs: fc.oneof(fc.constant(0), fc.integer({ min: 20, max: 300 })),
      maxLifetimeMs: fc.oneof(fc.constant(0), fc.integer({ min: 50, max: 500 })),
      housekeepingIntervalMs: fc.integer({ min: 5, max: 50 }),
      closeTimeoutMs: fc.integer({ min: 0, max: 300 }),
      validation: validation ? validationArb : fc.constant(undefined),
      drainBeforeClose: fc.boolean(),
    })
    .map(({ minRaw, ...rest }) => ({ ...rest, min: Math.min(minRaw, rest.max) }));

const index = fc.nat({ max: 15 });

const commandArb: fc.Arbitrary<Command> = fc.oneof(
  {
    weight: 15,
    arbitrary: fc.record({
      t: fc.constant('acquire' as const),
      mode: fc.constantFrom<AcquireMode>('none', 'timeout', 'default', 'signal', 'signalTimeout', 'preAborted'),
      timeoutMs: fc.integer({ min: 0, max: 120 }),
    }),
  },
  { weight: 9, arbitrary: fc.record({ t: fc.constant('release' as const), i: index }) },
  { weight: 3, arbitrary: fc.record({ t: fc.constant('destroy' as const), i: index }) },
  {
    weight: 3,
    arbitrary: fc.record({ t: fc.constant('doubleRelease' as const), i: index, viaDestroy: fc.boolean() }),
  },
  { weight: 6, arbitrary: fc.record({ t: fc.constant('abort' as const), i: index }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('evict' as const), i: index }) },
  { weight: 12, arbitrary: fc.record({ t: fc.constant('advance' as const), ms: fc.integer({ min: 0, max: 150 }) }) },
  {
    weight: 3,
    arbitrary: fc.record({
      t: fc.constant('failCreates' as const),
      n: fc.integer({ min: 1, max: 4 }),
      permanent: fc.constant(false),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      t: fc.constant('failCreates' as const),
      n: fc.constant(1),
      permanent: fc.constant(true),
    }),
  },
  // Rare: most of a run should happen with the pool open.
  { weight: 1, arbitrary: fc.constant({ t: 'close' as const }) },
);

/** Up to 40 steps ('max' size: fast-check's default would keep most runs under 10). */
export const commandsArb = fc.array(commandArb, { minLength: 1, maxLength: 40, size: 'max' });

// --- the model ----------------------------------------------------------------------------

interface AcquireRecord {
  readonly seq: number;
  readonly mode: AcquireMode;
  readonly startedAt: number;
  readonly timeoutMs: number;
  readonly deadline: number;
  readonly controller: AbortController | undefined;
  /** What the pool must do at once, judged from the stats just before the call. */
  readonly expected: 'closed' | 'aborted' | 'lease' | 'timeoutNow' | 'queueFull' | 'wait';
  /** Took an idle resource that may need validating first: it waits outside the queue meanwhile. */
  readonly mayValidate: boolean;
  abortReason: unknown;
  state: 'pending' | 'resolved' | 'rejected';
  settledAt: number;
  lease: Lease<Resource> | undefined;
  error: unknown;
  /** How the rejection was classified. */
  outcome: 'lease' | 'timeout' | 'aborted' | 'closed' | 'queueFull' | 'createFailed' | 'unknown' | undefined;
}

interface Held {
  readonly lease: Lease<Resource>;
  readonly resource: Resource;
  /** Destroyed by a forced close while held: the pool no longer counts it. */
  orphaned: boolean;
}

type Failure = 'transient' | 'permanent';

class Harness {
  readonly violations: string[] = [];
  readonly records: AcquireRecord[] = [];
  readonly held: Held[] = [];
  readonly givenBack: Lease<Resource>[] = [];
  readonly created = new Set<Resource>();
  readonly createdAt = new Map<Resource, number>();
  readonly destroyCalls = new Map<Resource, number>();
  readonly evicted = new Set<Resource>();
  readonly failures: Failure[] = [];
  readonly pool: Pool<Resource>;

  nextId = 0;
  createCalls = 0;
  inFlightCreates = 0;
  permanentFailures = 0;
  totalDestroyCalls = 0;
  validateCalls = 0;
  /** The test's validate calls not finished yet (the pool may stop waiting for one sooner). */
  validateInFlight = 0;
  /** Set for the final drain: every validation passes from then on. */
  validationHealthy = false;
  /** `error` events from the create phase: factory failures and create timeouts. */
  createErrorEvents = 0;
  giveBacks = 0;
  closeCalled = false;
  closeResolved = false;
  closePromise: Promise<void> | undefined = undefined;
  #instant = NaN;
  #callsThisInstant = 0;
  runaway = false;

  constructor(readonly config: Config) {
    this.pool = createPool<Resource>({
      max: config.max,
      min: config.min,
      maxWaiting: config.maxWaiting,
      reuse: config.reuse,
      acquireTimeoutMs: config.acquireTimeoutMs,
      createTimeoutMs: config.createTimeoutMs,
      createRetryDelayMs: config.createRetryDelayMs,
      createRetryMaxDelayMs: RETRY_MAX_DELAY,
      idleTimeoutMs: config.idleTimeoutMs,
      maxLifetimeMs: config.maxLifetimeMs,
      housekeepingIntervalMs: config.housekeepingIntervalMs,
      closeTimeoutMs: config.closeTimeoutMs,
      ...(config.validation === undefined
        ? {}
        : {
            validate: (resource: Resource) => this.#validate(resource),
            validateAfterIdleMs: config.validation.afterIdleMs,
            validateTimeoutMs: config.validation.timeoutMs,
          }),
      create: ({ signal }) => this.#create(signal),
      destroy: (resource) => this.#destroy(resource),
    });
    this.pool.on('error', ({ phase }) => {
      if (phase === 'create') this.createErrorEvents++;
    });
  }

  #made(resource: Resource): Resource {
    this.created.add(resource);
    this.createdAt.set(resource, clock());
    return resource;
  }

  /** Counts a create or validate call; true once the pool is spinning (see RUNAWAY_CALLS). */
  #spinning(): boolean {
    const now = clock();
    if (now !== this.#instant) {
      this.#instant = now;
      this.#callsThisInstant = 0;
    }
    if (++this.#callsThisInstant === RUNAWAY_CALLS && !this.runaway) {
      this.runaway = true;
      this.violations.push(`livelock: ${RUNAWAY_CALLS} create/validate calls while the clock stood still`);
    }
    return this.runaway;
  }

  #create(signal: AbortSignal): Promise<Resource> | Resource {
    if (this.#spinning()) throw Object.assign(new Error('harness: pool spinning'), { permanent: true });
    const call = this.createCalls++;
    const delay = this.config.createDelays[call % this.config.createDelays.length] ?? 0;
    const failure = this.failures.shift();
    const resource: Resource = { id: this.nextId++ };
    const fail = (): Error => {
      if (failure === 'permanent') {
        this.permanentFailures++;
        return Object.assign(new Error('bad password'), { permanent: true });
      }
      return Object.assign(new Error('connection refused'), { code: 'ECONNREFUSED' });
    };
    if (delay < 0) {
      if (failure !== undefined) throw fail();
      return this.#made(resource);
    }
    this.inFlightCreates++;
    return new Promise<Resource>((resolve, reject) => {
      const onAbort = (): void => {
        clearTimeout(timer);
        this.inFlightCreates--;
        reject(signal.reason);
      };
      const timer = setTimeout(() => {
        if (this.config.honorsAbort) signal.removeEventListener('abort', onAbort);
        this.inFlightCreates--;
        if (failure !== undefined) reject(fail());
        else resolve(this.#made(resource));
      }, delay);
      if (this.config.honorsAbort) signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  #destroy(resource: Resource): Promise<void> | void {
    this.totalDestroyCalls++;
    const count = (this.destroyCalls.get(resource) ?? 0) + 1;
    this.destroyCalls.set(resource, count);
    if (!this.created.has(resource)) this.violations.push(`destroy of a resource the factory never made`);
    if (count > 1) this.violations.push(`resource ${resource.id} destroyed ${count} times`);
    const holder = this.held.find((h) => h.resource === resource);
    if (holder !== undefined) {
      // Only a forced close may take a resource away from its holder.
      if (!this.closeCalled) this.violations.push(`resource ${resource.id} destroyed while held, pool open`);
      holder.orphaned = true;
    }
    if (this.config.destroyDelayMs === 0) {
      if (this.config.destroyFails) throw new Error('destroy failed');
      return undefined;
    }
    return new Promise<void>((resolve, reject) => {
      setTimeout(
        () => (this.config.destroyFails ? reject(new Error('destroy failed')) : resolve()),
        this.config.destroyDelayMs,
      );
    });
  }

  #validate(resource: Resource): Promise<boolean> | boolean {
    const validation = this.config.validation!;
    if (this.#spinning()) return true; // break the loop; the violation is recorded
    const call = this.validateCalls++;
    if (this.destroyed(resource) > 0) this.violations.push(`validating destroyed resource ${resource.id}`);
    if (this.held.some((h) => h.resource === resource)) this.violations.push(`validating held resource ${resource.id}`);
    const delay = validation.delays[call % validation.delays.length] ?? 0;
    const result = this.validationHealthy || (validation.results[call % validation.results.length] ?? true);
    if (delay < 0) return result;
    this.validateInFlight++;
    return new Promise<boolean>((resolve) =>
      setTimeout(() => {
        this.validateInFlight--;
        resolve(result);
      }, delay),
    );
  }

  destroyed(resource: Resource): number {
    return this.destroyCalls.get(resource) ?? 0;
  }

  pending(): AcquireRecord[] {
    return this.records.filter((r) => r.state === 'pending');
  }

  liveResources(): Resource[] {
    return [...this.created].filter((r) => this.destroyed(r) === 0);
  }

  /** Counted by the pool as in use: held by the test and not taken back by a forced close. */
  heldCounted(): number {
    return this.held.filter((h) => !h.orphaned).length;
  }

  // --- commands ---

  acquire(mode: AcquireMode, timeoutMs: number): AcquireRecord {
    const before = this.pool.stats();
    const controller = mode === 'signal' || mode === 'signalTimeout' || mode === 'preAborted' ? new AbortController() : undefined;
    let abortReason: unknown = undefined;
    if (mode === 'preAborted') {
      abortReason = new Error(`pre-aborted #${this.records.length}`);
      controller!.abort(abortReason);
    }
    const effectiveTimeout =
      mode === 'timeout' || mode === 'signalTimeout' || mode === 'preAborted'
        ? timeoutMs
        : mode === 'default'
          ? this.config.acquireTimeoutMs
          : Infinity;
    const expected: AcquireRecord['expected'] = this.closeCalled
      ? 'closed'
      : mode === 'preAborted'
        ? 'aborted'
        : before.idle > 0
          ? 'lease'
          : effectiveTimeout <= 0
            ? 'timeoutNow'
            : before.waiting >= this.config.maxWaiting
              ? 'queueFull'
              : 'wait';
    const startedAt = clock();
    const record: AcquireRecord = {
      seq: this.records.length,
      mode,
      startedAt,
      timeoutMs: effectiveTimeout,
      deadline: startedAt + effectiveTimeout,
      controller,
      expected,
      mayValidate: expected === 'lease' && this.config.validation !== undefined,
      abortReason,
      state: 'pending',
      settledAt: NaN,
      lease: undefined,
      error: undefined,
      outcome: undefined,
    };
    this.records.push(record);
    const options: { signal?: AbortSignal; timeoutMs?: number } = {};
    if (controller !== undefined) options.signal = controller.signal;
    if (mode === 'timeout' || mode === 'signalTimeout' || mode === 'preAborted') options.timeoutMs = timeoutMs;
    else if (mode === 'none' || mode === 'signal') options.timeoutMs = Infinity;
    this.pool.acquire(options).then(
      (lease) => this.#onLease(record, lease),
      (error: unknown) => this.#onRejection(record, error),
    );
    return record;
  }

  #onLease(record: AcquireRecord, lease: Lease<Resource>): void {
    record.state = 'resolved';
    record.settledAt = clock();
    record.lease = lease;
    record.outcome = 'lease';
    const resource = lease.resource;
    const where = `acquire #${record.seq}`;
    if (!this.created.has(resource)) this.violations.push(`${where}: got a resource the factory never made`);
    if (this.held.some((h) => h.resource === resource)) {
      this.violations.push(`${where}: resource ${resource.id} lent while another holder has it`);
    }
    if (this.destroyed(resource) > 0) this.violations.push(`${where}: lent resource ${resource.id} already destroyed`);
    if (this.closeCalled) this.violations.push(`${where}: lent after close()`);
    if (record.abortReason !== undefined) this.violations.push(`${where}: lent after its signal aborted`);
    if (record.settledAt > record.deadline) {
      this.violations.push(`${where}: lent at ${record.settledAt}, after its deadline ${record.deadline}`);
    }
    // First come, first served: nobody who asked earlier may still be waiting.
    for (const older of this.records) {
      if (older.seq < record.seq && older.state === 'pending' && !older.mayValidate) {
        this.violations.push(`${where}: served while older acquire #${older.seq} still waits (FIFO)`);
      }
    }
    this.held.push({ lease, resource, orphaned: false });
  }

  #onRejection(record: AcquireRecord, error: unknown): void {
    record.state = 'rejected';
    record.settledAt = clock();
    record.error = error;
    const where = `acquire #${record.seq}`;
    if (record.abortReason !== undefined && error === record.abortReason) {
      record.outcome = 'aborted';
    } else if (error instanceof PoolTimeoutError) {
      record.outcome = 'timeout';
      if (error.code !== 'POOL_TIMEOUT') this.violations.push(`${where}: timeout code ${error.code}`);
      if (record.settledAt < record.deadline) {
        this.violations.push(`${where}: timed out at ${record.settledAt} before its deadline ${record.deadline}`);
      }
      if (!(error.waitedMs >= record.timeoutMs)) {
        this.violations.push(`${where}: waitedMs ${error.waitedMs} < timeoutMs ${record.timeoutMs}`);
      }
      if (error.reason === 'create-failed' && (this.createErrorEvents === 0 || error.cause === undefined)) {
        this.violations.push(`${where}: 'create-failed' timeout without a create failure`);
      }
    } else if (error instanceof PoolClosedError) {
      record.outcome = 'closed';
      if (error.code !== 'POOL_CLOSED') this.violations.push(`${where}: closed code ${error.code}`);
      if (!this.closeCalled) this.violations.push(`${where}: PoolClosedError before close()`);
    } else if (error instanceof PoolQueueFullError) {
      record.outcome = 'queueFull';
      if (error.code !== 'POOL_QUEUE_FULL') this.violations.push(`${where}: queue-full code ${error.code}`);
      if (error.maxWaiting !== this.config.maxWaiting) this.violations.push(`${where}: wrong maxWaiting in error`);
    } else if (error instanceof PoolCreateError) {
      record.outcome = 'createFailed';
      if (error.code !== 'POOL_CREATE_FAILED') this.violations.push(`${where}: create-failed code ${error.code}`);
      if (this.permanentFailures === 0 && !this.runaway) {
        this.violations.push(`${where}: PoolCreateError without a permanent failure`);
      }
    } else {
      record.outcome = 'unknown';
      this.violations.push(`${where}: rejected with an unexpected error: ${String(error)}`);
    }
  }

  /** The checks every acquire gets once the microtasks it started have run. */
  checkImmediateOutcome(record: AcquireRecord): void {
    const where = `acquire #${record.seq} (expected ${record.expected})`;
    switch (record.expected) {
      case 'closed':
        if (record.outcome !== 'closed') this.violations.push(`${where}: got ${record.outcome ?? 'pending'}`);
        break;
      case 'aborted':
        if (record.outcome !== 'aborted') this.violations.push(`${where}: got ${record.outcome ?? 'pending'}`);
        break;
      case 'lease':
        // With validation the idle resource is checked first, which may take time or fail.
        if (!record.mayValidate && record.outcome !== 'lease') {
          this.violations.push(`${where}: idle resource not handed out at once`);
        }
        break;
      case 'timeoutNow':
        if (record.outcome !== 'timeout') this.violations.push(`${where}: got ${record.outcome ?? 'pending'}`);
        break;
      case 'queueFull':
        if (record.outcome !== 'queueFull') this.violations.push(`${where}: got ${record.outcome ?? 'pending'}`);
        break;
      case 'wait':
        // No timer ran yet: it waits, or a synchronous create already served or failed it.
        if (record.outcome !== undefined && record.outcome !== 'lease' && record.outcome !== 'createFailed') {
          this.violations.push(`${where}: got ${record.outcome}`);
        }
        break;
    }
  }

  giveBack(i: number, destroy: boolean): void {
    if (this.held.length === 0) return;
    const [holder] = this.held.splice(i % this.held.length, 1);
    if (holder === undefined) return;
    const { lease, resource, orphaned } = holder;
    const releasedBefore = this.pool.stats().totals.released;
    try {
      if (destroy) lease.destroy();
      else lease.release();
    } catch (error) {
      this.violations.push(`first ${destroy ? 'destroy' : 'release'} threw: ${String(error)}`);
    }
    this.givenBack.push(lease);
    if (!lease.released) this.violations.push('lease.released is false after giving it back');
    if (orphaned) {
      if (this.pool.stats().totals.released !== releasedBefore) {
        this.violations.push('a lease taken back by a forced close counted as released');
      }
      return;
    }
    this.giveBacks++;
    const mustDestroy = destroy || this.closeCalled || this.evicted.has(resource);
    if (mustDestroy && this.destroyed(resource) !== 1) {
      this.violations.push(`resource ${resource.id} not destroyed when given back (destroy=${destroy})`);
    }
    if (!mustDestroy && this.destroyed(resource) !== 0 && !this.#maybeExpired(resource)) {
      this.violations.push(`resource ${resource.id} destroyed on a plain release`);
    }
  }

  /** Past its (jittered) max lifetime, give or take a millisecond: retired when given back. */
  #maybeExpired(resource: Resource): boolean {
    const { maxLifetimeMs } = this.config;
    if (maxLifetimeMs === 0) return false;
    const jitter = Math.floor(maxLifetimeMs / 40);
    return clock() >= (this.createdAt.get(resource) ?? 0) + maxLifetimeMs - jitter - 1;
  }

  doubleRelease(i: number, viaDestroy: boolean): void {
    if (this.givenBack.length === 0) return;
    const lease = this.givenBack[i % this.givenBack.length]!;
    const before = this.pool.stats();
    let thrown: unknown = undefined;
    try {
      if (viaDestroy) lease.destroy();
      else lease.release();
    } catch (error) {
      thrown = error;
    }
    if (!(thrown instanceof LeaseReleasedError) || thrown.code !== 'LEASE_RELEASED') {
      this.violations.push(`second give-back did not throw LeaseReleasedError: ${String(thrown)}`);
    }
    expect(this.pool.stats(), 'stats after a double release').toEqual(before);
  }

  abort(i: number): { record: AcquireRecord; wasPending: boolean } | undefined {
    const withSignal = this.records.filter((r) => r.controller !== undefined);
    if (withSignal.length === 0) return undefined;
    const record = withSignal[i % withSignal.length]!;
    const reason = new Error(`abort #${record.seq}`);
    const wasPending = record.state === 'pending';
    if (wasPending) record.abortReason = reason;
    record.controller!.abort(reason);
    return { record, wasPending };
  }

  evict(i: number): void {
    const live = this.liveResources();
    if (live.length === 0) return;
    const resource = live[i % live.length]!;
    const holder = this.held.find((h) => h.resource === resource);
    this.pool.evict(resource);
    if (holder !== undefined) {
      this.evicted.add(resource);
      if (this.destroyed(resource) !== 0) this.violations.push(`evicted resource ${resource.id} destroyed while held`);
    } else if (this.destroyed(resource) !== 1) {
      // Not held and not destroyed at once: it must be out being validated, and goes when that ends.
      const validating = this.pool.stats().inUse - this.heldCounted();
      if (validating === 0) this.violations.push(`evicted idle resource ${resource.id} not destroyed at once`);
      this.evicted.add(resource);
    }
  }

  close(): void {
    if (this.closePromise !== undefined) {
      if (this.pool.close() !== this.closePromise) this.violations.push('close() twice returned another promise');
      return;
    }
    this.closeCalled = true;
    this.closePromise = this.pool.close();
    this.closePromise.then(
      () => {
        this.closeResolved = true;
      },
      (error: unknown) => this.violations.push(`close() rejected: ${String(error)}`),
    );
  }

  // --- invariants ---

  /**
   * Checked after every step, once microtasks have run. `timersRan`: the step ran the
   * timers due now, so no deadline that has come may still be pending.
   */
  checkInvariants(step: string, timersRan = false): void {
    const s = this.pool.stats();
    const { max } = this.config;
    const at = `after ${step}`;
    expect(this.violations, at).toEqual([]);
    expect(s.inUse + s.idle + s.pendingCreates, `${at}: inUse + idle + pendingCreates <= max`).toBeLessThanOrEqual(max);
    expect(s.size + s.pendingCreates, `${at}: size + pendingCreates <= max`).toBeLessThanOrEqual(max);
    expect(s.inUse + s.idle, `${at}: inUse + idle == size`).toBe(s.size);
    if (s.idle > 0) expect(s.waiting, `${at}: idle > 0 implies nobody waits`).toBe(0);
    // In use = leased to the test + being validated (for a caller, or on after it gave up).
    const validating = s.inUse - this.heldCounted();
    const pending = this.pending();
    if (this.config.validation === undefined) {
      expect(validating, `${at}: inUse == leases the test holds`).toBe(0);
      expect(s.waiting, `${at}: waiting == acquires still pending`).toBe(pending.length);
    } else {
      expect(validating, `${at}: inUse >= leases the test holds`).toBeGreaterThanOrEqual(0);
      expect(validating, `${at}: validating <= validate calls in flight`).toBeLessThanOrEqual(this.validateInFlight);
      // Every pending caller is queued or waits on a validation; queued ones are pending.
      expect(s.waiting, `${at}: waiting <= acquires still pending`).toBeLessThanOrEqual(pending.length);
      expect(pending.length - s.waiting, `${at}: pending outside the queue only while validating`).toBeLessThanOrEqual(
        Math.min(validating, pending.filter((r) => r.mayValidate).length),
      );
    }
    expect(s.size, `${at}: size == created - destroyed`).toBe(this.created.size - this.totalDestroyCalls);
    expect(s.pendingCreates, `${at}: pendingCreates <= factory calls in flight`).toBeLessThanOrEqual(
      this.inFlightCreates,
    );
    expect(s.closed, `${at}: closed`).toBe(this.closeCalled);
    const count = (outcome: AcquireRecord['outcome']): number =>
      this.records.filter((r) => r.outcome === outcome).length;
    expect(s.totals.acquired, `${at}: totals.acquired`).toBe(count('lease'));
    expect(s.totals.timedOut, `${at}: totals.timedOut`).toBe(count('timeout'));
    expect(s.totals.aborted, `${at}: totals.aborted`).toBe(count('aborted'));
    expect(s.totals.rejected, `${at}: totals.rejected`).toBe(count('queueFull'));
    expect(s.totals.released, `${at}: totals.released`).toBe(this.giveBacks);
    expect(s.totals.created, `${at}: totals.created`).toBe(this.created.size);
    expect(s.totals.destroyed, `${at}: totals.destroyed`).toBe(this.totalDestroyCalls);
    expect(s.totals.createErrors, `${at}: totals.createErrors`).toBe(this.createErrorEvents);
    // A deadline is kept: once time has passed it, the caller has its answer.
    const now = clock();
    for (const record of this.pending()) {
      const message = `${at}: acquire #${record.seq} still pending past its deadline`;
      if (timersRan) expect(record.deadline, message).toBeGreaterThan(now);
      else expect(record.deadline, message).toBeGreaterThanOrEqual(now);
    }
    if (this.closeResolved) {
      expect(
        { size: s.size, idle: s.idle, inUse: s.inUse, waiting: s.waiting, pendingCreates: s.pendingCreates },
        `${at}: close() resolved with something left`,
      ).toEqual({ size: 0, idle: 0, inUse: 0, waiting: 0, pendingCreates: 0 });
    }
  }
}

async function runCommand(h: Harness, command: Command): Promise<void> {
  switch (command.t) {
    case 'acquire': {
      const record = h.acquire(command.mode, command.timeoutMs);
      await flush();
      h.checkImmediateOutcome(record);
      return;
    }
    case 'release':
      h.giveBack(command.i, false);
      await flush();
      return;
    case 'destroy':
      h.giveBack(command.i, true);
      await flush();
      return;
    case 'doubleRelease':
      h.doubleRelease(command.i, command.viaDestroy);
      await flush();
      return;
    case 'abort': {
      const before = h.pool.stats();
      const aborted = h.abort(command.i);
      await flush();
      if (aborted === undefined) return;
      const { record, wasPending } = aborted;
      if (wasPending) {
        // A waiter leaves at once, rejected with the signal's reason.
        if (record.outcome !== 'aborted' || record.error !== record.abortReason) {
          h.violations.push(`acquire #${record.seq}: aborted while waiting but ended ${record.outcome ?? 'pending'}`);
        }
      } else {
        // Aborting a settled call changes nothing.
        expect(h.pool.stats().totals.aborted, 'aborting a settled acquire counted').toBe(before.totals.aborted);
      }
      return;
    }
    case 'evict':
      h.evict(command.i);
      await flush();
      return;
    case 'advance':
      await advance(command.ms);
      return;
    case 'failCreates':
      for (let n = 0; n < command.n; n++) h.failures.push(command.permanent ? 'permanent' : 'transient');
      return;
    case 'close': {
      const pendingBefore = h.pending();
      h.close();
      await flush();
      for (const record of pendingBefore) {
        // close() aborts validations too, so a caller waiting on one is answered as well.
        if (record.outcome !== 'closed') {
          h.violations.push(`acquire #${record.seq}: waiting at close() but ended ${record.outcome ?? 'pending'}`);
        }
      }
      return;
    }
  }
}

/**
 * Gives every lease back, with creates and validations healthy again, until no caller
 * waits: every waiter must get served.
 */
async function drain(h: Harness): Promise<void> {
  h.failures.length = 0;
  h.validationHealthy = true;
  for (let round = 0; round < 80 && (h.pending().length > 0 || h.held.length > 0); round++) {
    while (h.held.length > 0) h.giveBack(0, false);
    await flush();
    h.checkInvariants(`drain round ${round} (released)`);
    await advance(MAX_CREATE_DELAY + RETRY_MAX_DELAY + 10);
    h.checkInvariants(`drain round ${round}`, true);
  }
  expect(h.pending().map((r) => r.seq), 'acquires never served although everything came back').toEqual([]);
  expect(h.held.length).toBe(0);
}

async function finish(h: Harness): Promise<void> {
  const canDrain =
    h.config.drainBeforeClose &&
    !h.closeCalled &&
    (h.config.createTimeoutMs === Infinity || h.config.createTimeoutMs > MAX_CREATE_DELAY);
  if (canDrain) await drain(h);

  const heldAtClose = h.held.length;
  h.close();
  await flush();
  h.checkInvariants('final close()');
  expect(
    h.pending().map((r) => r.seq),
    'acquires still pending right after close()',
  ).toEqual([]);

  // Long enough for the grace period, any create still in flight, and the destroys.
  await advance(
    h.config.closeTimeoutMs + MAX_CREATE_DELAY + MAX_VALIDATE_DELAY + 2 * h.config.destroyDelayMs + 10,
  );
  h.checkInvariants('draining timers after close', true);
  expect(h.closeResolved, 'close() resolved').toBe(true);
  expect(vi.getTimerCount(), 'timers left after close').toBe(0);
  expect(h.inFlightCreates).toBe(0);

  // Every acquire settled, and every created resource was destroyed exactly once.
  expect(h.records.filter((r) => r.state === 'pending').map((r) => r.seq)).toEqual([]);
  for (const resource of h.created) {
    expect(h.destroyed(resource), `destroy calls for resource ${resource.id}`).toBe(1);
  }
  const s = h.pool.stats();
  expect(s.totals.created).toBe(h.created.size);
  expect(s.totals.destroyed).toBe(h.created.size);

  // Leases a forced close took back: giving them back is a silent no-op, once.
  for (const holder of [...h.held]) {
    expect(holder.orphaned, 'a lease still counted after close() resolved').toBe(true);
    h.giveBack(0, false);
  }
  expect(h.pool.stats()).toEqual(s);
  if (heldAtClose > 0) h.doubleRelease(0, false);

  // And the pool refuses new callers.
  const late = h.acquire('none', 0);
  await flush();
  expect(late.outcome).toBe('closed');
  expect(late.error).toBeInstanceOf(PoolClosedError);
  expect(h.violations).toEqual([]);
}

/** Runs one generated scenario on a fresh pool and fake clock. */
export async function runScenario(config: Config, commands: readonly Command[]): Promise<void> {
  await withFakeTime(async () => {
    const h = new Harness(config);
    await flush(); // min warm-up runs in a microtask
    h.checkInvariants('construction');
    for (const [step, command] of commands.entries()) {
      await runCommand(h, command);
      h.checkInvariants(`step ${step}: ${JSON.stringify(command)}`, command.t === 'advance');
    }
    await finish(h);
  });
}

