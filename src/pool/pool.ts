import { describeError, InvalidOptionError, SluiceError } from '../errors.js';
import type { BudgetSlot } from './budget.js';
import { DeadlineHeap } from './deadline-heap.js';
import { PoolClosedError, PoolCreateError, PoolQueueFullError, PoolTimeoutError } from './errors.js';
import {
  PoolEventEmitter,
  type DestroyReason,
  type PoolErrorPhase,
  type PoolEventName,
  type PoolListener,
} from './events.js';
import { PoolLease, RETURN_LEASE, type Lease, type LeaseOwner, type StackHolder } from './lease.js';
import { checkMilliseconds, resolvePoolOptions, type PoolOptions, type ResolvedPoolOptions } from './options.js';
import type { PooledResource } from './pooled-resource.js';
import type { PoolStats } from './stats.js';
import { CALLER_GONE, raceCaller, retryDelay, startTimer } from './timers.js';
import { WaiterQueue, type Waiter } from './waiter-queue.js';

/** Per-call options for `acquire` and `use`. */
export interface AcquireOptions {
  /** Aborting it makes the call reject with `signal.reason` and leave the queue at once. */
  readonly signal?: AbortSignal;
  /** How long to wait for a resource. Default: the pool's `acquireTimeoutMs`. `Infinity` waits for ever. */
  readonly timeoutMs?: number;
}

/** What `use()` passes to its callback besides the resource. */
export interface UseContext {
  /** The caller's signal, to pass on to the work; one that never aborts if none was given. */
  readonly signal: AbortSignal;
}

type Entry<R> = PooledResource<R>;
type PoolLeaseOf<R> = PoolLease<R, Entry<R>>;
type Timer = ReturnType<typeof setTimeout>;

/** A create call in flight. */
interface CreateAttempt {
  readonly controller: AbortController;
  timer: Timer | undefined;
  /** Set once the attempt has been counted as finished (settled, timed out or closed). */
  finished: boolean;
  /** True while it waits for a slot of the pool's budget (the create itself has not started). */
  awaitingSlot: boolean;
}

const NEVER_ABORTED = new AbortController().signal;

// The global, looked up per call, so test fake timers that replace it are honoured.
const now = (): number => performance.now();

/**
 * A semaphore-bounded pool of async resources. See `createPool`.
 *
 * Invariants, at every step:
 * - `size + pendingCreates <= max`; no resource is lent to two holders;
 * - `idle > 0` implies `waiting == 0`: a resource coming back goes to the longest waiter;
 * - every created resource is destroyed exactly once, and every acquire settles.
 */
export class Pool<R> implements LeaseOwner<R, Entry<R>> {
  readonly #options: ResolvedPoolOptions<R>;
  readonly #events = new PoolEventEmitter<R>();
  readonly #all = new Set<Entry<R>>();
  readonly #idle: Entry<R>[] = [];
  readonly #waiters = new WaiterQueue<PoolLeaseOf<R>>();
  readonly #deadlines = new DeadlineHeap<Waiter<PoolLeaseOf<R>>>();
  readonly #attempts = new Set<CreateAttempt>();
  readonly #destroying = new Set<Promise<void>>();
  /** Validations in flight, so `close()` can abort them. */
  readonly #validations = new Set<AbortController>();
  readonly #lifo: boolean;
  readonly #leakDetection: boolean;
  /** Whether checkout may validate (and so must read the clock). */
  readonly #validates: boolean;

  #leased = 0;
  #validating = 0;
  #deadlineTimer: Timer | undefined = undefined;
  #deadlineTimerAt = Infinity;
  #retryTimer: Timer | undefined = undefined;
  #housekeepingTimer: ReturnType<typeof setInterval> | undefined;
  #consecutiveCreateFailures = 0;
  #lastCreateError: { readonly error: unknown } | undefined = undefined;
  /** Set first thing in `close()`, so nothing re-entered from a callback sees an open pool. */
  #closed = false;
  #closing: Promise<void> | undefined = undefined;
  #onDrained: (() => void) | undefined = undefined;

  #acquired = 0;
  #released = 0;
  #timedOut = 0;
  #aborted = 0;
  #rejected = 0;
  #created = 0;
  #destroyed = 0;
  #createErrors = 0;
  #validationFailures = 0;
  #leaks = 0;

  constructor(options: PoolOptions<R>) {
    this.#options = resolvePoolOptions(options);
    this.#lifo = this.#options.reuse === 'lifo';
    this.#leakDetection = this.#options.leakDetectionMs > 0;
    this.#validates = this.#options.validate !== undefined;
    // First: a budget that refuses this pool (it serves another) leaves nothing running.
    this.#options.budget?.attach(() => this.#giveBackIdleSlots());
    this.#housekeepingTimer = setInterval(() => this.#housekeep(), this.#options.housekeepingIntervalMs);
    this.#housekeepingTimer.unref();
    // Warm up after the caller has its `pool` binding: a factory may refer to it.
    if (this.#options.min > 0) queueMicrotask(() => this.#fill());
  }

  /**
   * Waits for a resource. Rejects with `PoolTimeoutError` when the deadline passes,
   * `signal.reason` when the signal aborts, `PoolQueueFullError` when `maxWaiting`
   * callers are already queued, `PoolClosedError` when the pool closes, and
   * `PoolCreateError` when the factory fails permanently.
   */
  acquire(options?: AcquireOptions): Promise<Lease<R>> {
    let stack: StackHolder | undefined;
    if (this.#leakDetection) {
      stack = {};
      Error.captureStackTrace(stack, this.acquire);
    }
    let timeoutMs: number;
    try {
      timeoutMs = this.#timeoutOf(options);
    } catch (error) {
      return Promise.reject(error);
    }
    return this.#acquire(options?.signal, timeoutMs, stack);
  }

  /**
   * Acquires, runs `work`, and gives the resource back: released when `work` settles, or
   * destroyed when it throws an error `isFatalError` calls fatal. Returns what `work` returns.
   */
  async use<T>(work: (resource: R, context: UseContext) => Promise<T> | T, options?: AcquireOptions): Promise<T> {
    let stack: StackHolder | undefined;
    if (this.#leakDetection) {
      stack = {};
      Error.captureStackTrace(stack, this.use);
    }
    const signal = options?.signal;
    const lease = await this.#acquire(signal, this.#timeoutOf(options), stack);
    let result: T;
    try {
      result = await work(lease.resource, { signal: signal ?? NEVER_ABORTED });
    } catch (error) {
      if (this.#isFatal(error, lease.resource)) lease.destroy();
      else lease.release();
      throw error;
    }
    lease.release();
    return result;
  }

  #isFatal(error: unknown, resource: R): boolean {
    const isFatalError = this.#options.isFatalError;
    if (isFatalError === undefined) return false;
    try {
      return isFatalError(error, resource) === true;
    } catch (hookError) {
      // A classifier that fails cannot vouch for the resource: destroy it to be safe.
      this.#emitError(hookError, 'hook');
      return true;
    }
  }

  /**
   * Reports a resource broken, e.g. from its `error` or `close` listener. An idle one is
   * destroyed now; a leased one when its holder gives it back. Unknown resources are ignored.
   */
  evict(resource: R, error?: unknown): void {
    if (error !== undefined) this.#emitError(error, 'evict');
    for (const entry of this.#all) {
      if (entry.resource !== resource) continue;
      if (entry.state === 'idle') {
        this.#idle.splice(this.#idle.indexOf(entry), 1);
        this.#retire(entry, 'evicted');
      } else {
        entry.retireReason ??= 'evicted';
      }
      return;
    }
  }

  stats(): PoolStats {
    return {
      size: this.#all.size,
      idle: this.#idle.length,
      inUse: this.#leased + this.#validating,
      waiting: this.#waiters.length,
      pendingCreates: this.#attempts.size,
      max: this.#options.max,
      min: this.#options.min,
      maxWaiting: this.#options.maxWaiting,
      closed: this.#closed,
      totals: {
        acquired: this.#acquired,
        released: this.#released,
        timedOut: this.#timedOut,
        aborted: this.#aborted,
        rejected: this.#rejected,
        created: this.#created,
        destroyed: this.#destroyed,
        createErrors: this.#createErrors,
        validationFailures: this.#validationFailures,
        leaks: this.#leaks,
      },
    };
  }

  on<E extends PoolEventName>(event: E, listener: PoolListener<R, E>): this {
    this.#events.on(event, listener);
    return this;
  }

  once<E extends PoolEventName>(event: E, listener: PoolListener<R, E>): this {
    this.#events.once(event, listener);
    return this;
  }

  off<E extends PoolEventName>(event: E, listener: PoolListener<R, E>): this {
    this.#events.off(event, listener);
    return this;
  }

  /**
   * Closes the pool: new and waiting acquires reject with `PoolClosedError`, pending
   * creates are aborted, idle resources are destroyed, and leases still out are waited
   * for up to `closeTimeoutMs`, then destroyed anyway. Resolves when every resource is
   * destroyed; no timer of the pool's is left. Calling it again returns the same promise.
   */
  close(): Promise<void> {
    if (this.#closing === undefined) {
      this.#closed = true;
      this.#closing = this.#close();
    }
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** Called by a lease on `release()` / `destroy()`, exactly once per lease. */
  [RETURN_LEASE](lease: PoolLeaseOf<R>, destroy: boolean): void {
    const entry = lease.entry;
    if (entry.state === 'destroyed') return; // destroyed by a forced close: nothing to give back
    entry.lease = undefined;
    this.#leased--;
    this.#released++;
    if (this.#events.has('release')) this.#events.emit('release', { resource: entry.resource });
    if (destroy) return this.#retire(entry, 'destroyed');
    if (entry.retireReason !== undefined) return this.#retire(entry, entry.retireReason);
    if (this.#closed) return this.#retire(entry, 'closed');
    // Its slot is wanted by another pool: given back now rather than to our next waiter.
    if (!this.#keepsSlot(entry)) return this.#retire(entry, 'budget');
    entry.lastReleasedAt = now();
    this.#offer(entry);
  }

  // --- acquiring ------------------------------------------------------------------------

  /** Checks the per-call options; returns the timeout to use. */
  #timeoutOf(options: AcquireOptions | undefined): number {
    const signal = options?.signal;
    if (signal !== undefined && typeof (signal as Partial<AbortSignal>).addEventListener !== 'function') {
      throw new InvalidOptionError('signal', 'expected an AbortSignal.');
    }
    const timeoutMs = options?.timeoutMs;
    if (timeoutMs === undefined) return this.#options.acquireTimeoutMs;
    return checkMilliseconds('timeoutMs', timeoutMs, 0, { allowInfinity: true });
  }

  /**
   * `timeoutMs` counts from `startedAt` (read from the clock only when needed), so a retry
   * after a failed validation keeps the caller's original deadline. `retryAfter` is when
   * that validation failed: resources made or returned since then skip validation.
   */
  #acquire(
    signal: AbortSignal | undefined,
    timeoutMs: number,
    stack: StackHolder | undefined,
    startedAt?: number,
    retryAfter?: number,
  ): Promise<PoolLeaseOf<R>> {
    if (this.#closed) return Promise.reject(new PoolClosedError());
    if (signal?.aborted === true) {
      this.#aborted++;
      return Promise.reject(signal.reason);
    }
    // Fast path. `idle > 0` implies nobody waits, so taking it is fair.
    const entry = this.#takeIdle();
    if (entry !== undefined) {
      if (this.#validates) {
        const time = now();
        // On a retry, a resource made or returned since the failed validation is as fresh
        // as it gets: validating it again could loop for ever (in microtasks, starving
        // every timer) when `min` refills at once with a synchronous factory.
        const fresh = retryAfter !== undefined && entry.lastReleasedAt >= retryAfter;
        if (!fresh && time - entry.lastReleasedAt >= this.#options.validateAfterIdleMs) {
          return this.#validateThenLend(entry, signal, timeoutMs, stack, startedAt ?? time);
        }
      }
      return Promise.resolve(this.#lend(entry, stack, 0));
    }
    if (timeoutMs <= 0) {
      // A zero deadline means "only if one is free now": no queue, no create.
      this.#timedOut++;
      return Promise.reject(this.#timeoutError(0));
    }
    if (startedAt !== undefined && retryAfter !== undefined && startedAt + timeoutMs <= retryAfter) {
      // A retry whose deadline passed during the failed validation: no queue, no create.
      this.#timedOut++;
      return Promise.reject(this.#timeoutError(retryAfter - startedAt));
    }
    if (this.#waiters.length >= this.#options.maxWaiting) {
      this.#rejected++;
      return Promise.reject(new PoolQueueFullError(this.#options.maxWaiting));
    }
    return this.#wait(signal, timeoutMs, stack, startedAt ?? now());
  }

  #wait(
    signal: AbortSignal | undefined,
    timeoutMs: number,
    stack: StackHolder | undefined,
    enqueuedAt: number,
  ): Promise<PoolLeaseOf<R>> {
    return new Promise<PoolLeaseOf<R>>((resolve, reject) => {
      const waiter: Waiter<PoolLeaseOf<R>> = {
        resolve,
        reject,
        enqueuedAt,
        deadline: enqueuedAt + timeoutMs,
        signal,
        stack,
        onAbort: undefined,
        settled: false,
        previous: undefined,
        next: undefined,
      };
      if (signal !== undefined) {
        waiter.onAbort = () => this.#abortWaiter(waiter);
        signal.addEventListener('abort', waiter.onAbort, { once: true });
      }
      this.#waiters.push(waiter);
      if (waiter.deadline !== Infinity) {
        this.#deadlines.push(waiter);
        if (waiter.deadline < this.#deadlineTimerAt) this.#armDeadlineTimer(waiter.deadline);
      }
      // A create retry pending in backoff must keep the process alive for this caller.
      this.#retryTimer?.ref();
      this.#fill();
    });
  }

  /** Marks a waiter that left the queue as settled and stops listening to its signal. */
  #detach(waiter: Waiter<PoolLeaseOf<R>>): void {
    waiter.settled = true;
    // With nobody left waiting, a create retry in backoff must not hold the process open.
    if (this.#waiters.length === 0) this.#retryTimer?.unref();
    if (waiter.onAbort !== undefined) waiter.signal!.removeEventListener('abort', waiter.onAbort);
  }

  /** Tells the deadline heap a waiter left by other means than its deadline. */
  #leaveHeap(waiter: Waiter<PoolLeaseOf<R>>): void {
    if (waiter.deadline === Infinity) return;
    this.#deadlines.forget();
    // Nobody left to time out: no timer may keep the process alive.
    if (this.#deadlines.live === 0 && this.#deadlineTimer !== undefined) this.#disarmDeadlineTimer();
  }

  #abortWaiter(waiter: Waiter<PoolLeaseOf<R>>): void {
    if (waiter.settled) return;
    this.#waiters.remove(waiter);
    this.#leaveHeap(waiter);
    this.#detach(waiter);
    this.#aborted++;
    waiter.reject(waiter.signal!.reason);
    this.#stopUnneededSlotWaits();
  }

  #armDeadlineTimer(deadline: number): void {
    if (this.#deadlineTimer !== undefined) clearTimeout(this.#deadlineTimer);
    this.#deadlineTimerAt = deadline;
    this.#deadlineTimer = startTimer(deadline - now(), () => this.#expireWaiters(), false);
  }

  #disarmDeadlineTimer(): void {
    clearTimeout(this.#deadlineTimer);
    this.#deadlineTimer = undefined;
    this.#deadlineTimerAt = Infinity;
  }

  #expireWaiters(): void {
    this.#deadlineTimer = undefined;
    this.#deadlineTimerAt = Infinity;
    const time = now();
    for (let waiter = this.#deadlines.popDue(time); waiter !== undefined; waiter = this.#deadlines.popDue(time)) {
      this.#waiters.remove(waiter);
      this.#detach(waiter);
      this.#timedOut++;
      waiter.reject(this.#timeoutError(time - waiter.enqueuedAt));
    }
    const next = this.#deadlines.peekDeadline();
    if (next !== Infinity) this.#armDeadlineTimer(next);
    this.#stopUnneededSlotWaits();
  }

  #timeoutError(waitedMs: number): PoolTimeoutError {
    const { name, max } = this.#options;
    const waited = Math.round(waitedMs);
    const failure = this.#lastCreateError;
    // Room to grow yet no resource: the creates are what failed, not the pool being full.
    if (failure !== undefined && this.#all.size < max) {
      return new PoolTimeoutError(
        'create-failed',
        waitedMs,
        `${name}: timed out after ${waited} ms waiting for a resource: creating one keeps failing ` +
          `(last error: ${describeError(failure.error)}; see cause). Is the database reachable?`,
        { cause: failure.error },
      );
    }
    const budget = this.#options.budget;
    if (budget !== undefined && this.#attempts.size > 0 && this.#all.size < max && this.#allAwaitSlots()) {
      return new PoolTimeoutError(
        'budget',
        waitedMs,
        `${name}: timed out after ${waited} ms waiting for a resource: the pool has room (size ${this.#all.size}/${max}) ` +
          `but no slot of ${budget.description} came free: other pools hold them all. ` +
          'Raise the shared limit, or hold connections for less time in every process.',
      );
    }
    if (this.#attempts.size > 0 && this.#all.size < max) {
      return new PoolTimeoutError(
        'create-pending',
        waitedMs,
        `${name}: timed out after ${waited} ms waiting for a resource: creating one has not finished ` +
          `(${this.#attempts.size} pending). Is the database answering?`,
      );
    }
    const { size, inUse, waiting, pendingCreates } = this.stats();
    return new PoolTimeoutError(
      'exhausted',
      waitedMs,
      `${name}: timed out after ${waited} ms waiting for a resource: the pool is exhausted ` +
        `(size ${size}/${max}, in use ${inUse}, waiting ${waiting}, pending creates ${pendingCreates}). ` +
        'Raise max, hold leases for less time, or shed load with maxWaiting.',
    );
  }

  #takeIdle(): Entry<R> | undefined {
    const entry = this.#lifo ? this.#idle.pop() : this.#idle.shift();
    if (entry !== undefined) entry.state = 'leased';
    return entry;
  }

  #lend(entry: Entry<R>, stack: StackHolder | undefined, waitedMs: number): PoolLeaseOf<R> {
    entry.state = 'leased';
    const lease = new PoolLease<R, Entry<R>>(this, entry, entry.resource, this.#leakDetection ? now() : 0, stack);
    entry.lease = lease;
    this.#leased++;
    this.#acquired++;
    if (this.#events.has('acquire')) this.#events.emit('acquire', { resource: entry.resource, waitedMs });
    return lease;
  }

  /** A resource is free: the longest waiter gets it, or it goes idle. */
  #offer(entry: Entry<R>): void {
    const waiter = this.#waiters.shift();
    if (waiter === undefined) {
      entry.state = 'idle';
      entry.lease = undefined;
      this.#idle.push(entry);
      return;
    }
    this.#leaveHeap(waiter);
    this.#detach(waiter);
    const waitedMs = this.#events.has('acquire') ? now() - waiter.enqueuedAt : 0;
    waiter.resolve(this.#lend(entry, waiter.stack, waitedMs));
    // Served by a resource that came back: the slot wait started for it is not needed.
    if (this.#options.budget !== undefined) this.#stopUnneededSlotWaits();
  }

  async #validateThenLend(
    entry: Entry<R>,
    signal: AbortSignal | undefined,
    timeoutMs: number,
    stack: StackHolder | undefined,
    startedAt: number,
  ): Promise<PoolLeaseOf<R>> {
    entry.state = 'validating';
    this.#validating++;
    const check = this.#validate(entry.resource);
    const valid = await raceCaller(check, signal, startedAt + timeoutMs - now());
    if (valid === CALLER_GONE) {
      // The caller stopped waiting, but the check goes on under its own timeout and
      // decides where the resource goes: a healthy one is not destroyed for a caller's haste.
      void check.then((ok) => {
        if (this.#finishValidation(entry, ok)) {
          entry.lastReleasedAt = now();
          this.#offer(entry);
        }
      });
      if (signal?.aborted === true) {
        this.#aborted++;
        throw signal.reason;
      }
      this.#timedOut++;
      const waited = now() - startedAt;
      throw new PoolTimeoutError(
        'validation',
        waited,
        `${this.#options.name}: timed out after ${Math.round(waited)} ms waiting for a resource: the one free ` +
          'resource was still being validated. It stays in the pool; allow more time, or raise validateAfterIdleMs.',
      );
    }
    if (this.#finishValidation(entry, valid)) return this.#lend(entry, stack, now() - startedAt);
    // Another resource, within what is left of the same deadline.
    return this.#acquire(signal, timeoutMs, stack, startedAt, now());
  }

  /** Settles a validation's books; true when the resource may be handed out. */
  #finishValidation(entry: Entry<R>, valid: boolean): boolean {
    this.#validating--;
    if (entry.state === 'destroyed') return false; // a forced close took it meanwhile
    if (valid && entry.retireReason === undefined && !this.#closed) return true;
    if (!valid && !this.#closed) this.#validationFailures++;
    this.#retire(entry, entry.retireReason ?? (this.#closed ? 'closed' : 'validation'));
    return false;
  }

  /** Runs `validate` under `validateTimeoutMs`. Never rejects: a throw or timeout is `false`. */
  async #validate(resource: R): Promise<boolean> {
    const controller = new AbortController();
    this.#validations.add(controller);
    const timeoutMs = this.#options.validateTimeoutMs;
    const timer = startTimer(
      timeoutMs,
      () => controller.abort(new SluiceError('VALIDATE_TIMEOUT', `validate did not finish within ${timeoutMs} ms`)),
      false, // a caller may be waiting on it: it must keep the process alive, as the caller's wait would
    );
    try {
      const aborted = new Promise<false>((resolve) => {
        controller.signal.addEventListener('abort', () => resolve(false), { once: true });
      });
      const check = Promise.resolve(this.#options.validate!(resource, { signal: controller.signal }));
      return (await Promise.race([check, aborted])) === true;
    } catch (error) {
      this.#emitError(error, 'validate');
      return false;
    } finally {
      clearTimeout(timer);
      this.#validations.delete(controller);
      controller.abort(); // settles `aborted`; nothing else listens any more
    }
  }

  // --- creating -------------------------------------------------------------------------

  /** How many more creates to start now: enough for the waiters and `min`, within `max`. */
  #createsWanted(): number {
    const { min, max } = this.#options;
    const live = this.#all.size + this.#attempts.size;
    const forWaiters = this.#waiters.length - this.#attempts.size;
    const forMin = min - live;
    return Math.min(max - live, Math.max(forWaiters, forMin, 0));
  }

  /** The one path that starts creates. Runs whenever demand may have grown. */
  #fill(): void {
    if (this.#closed || this.#retryTimer !== undefined) return;
    for (let wanted = this.#createsWanted(); wanted > 0; wanted--) this.#startCreate();
  }

  #startCreate(): void {
    const attempt: CreateAttempt = {
      controller: new AbortController(),
      timer: undefined,
      finished: false,
      awaitingSlot: false,
    };
    this.#attempts.add(attempt);
    const budget = this.#options.budget;
    if (budget === undefined) {
      this.#create(attempt, undefined);
      return;
    }
    // A slot first; the create (and its timeout) starts once one is granted. The wait is
    // bounded by the callers: it stops when none is left to need it.
    attempt.awaitingSlot = true;
    let taking: Promise<BudgetSlot>;
    try {
      taking = Promise.resolve(budget.take(attempt.controller.signal));
    } catch (error) {
      taking = Promise.reject(error);
    }
    taking.then(
      (slot) => {
        attempt.awaitingSlot = false;
        if (attempt.finished) this.#releaseSlot(slot);
        else this.#create(attempt, slot);
      },
      (error: unknown) => {
        attempt.awaitingSlot = false;
        this.#createFailed(attempt, error);
      },
    );
  }

  #create(attempt: CreateAttempt, slot: BudgetSlot | undefined): void {
    attempt.timer = startTimer(
      this.#options.createTimeoutMs,
      () => {
        const error = new SluiceError(
          'CREATE_TIMEOUT',
          `${this.#options.name}: create did not finish within createTimeoutMs (${this.#options.createTimeoutMs} ms) and was aborted.`,
        );
        attempt.controller.abort(error);
        this.#createFailed(attempt, error);
      },
      true,
    );
    let created: Promise<R>;
    try {
      created = Promise.resolve(this.#options.create({ signal: attempt.controller.signal }));
    } catch (error) {
      created = Promise.reject(error);
    }
    created.then(
      (resource) => this.#createSucceeded(attempt, resource, slot),
      (error: unknown) => {
        // Only now: a create that timed out may still have been opening its connection.
        if (slot !== undefined) this.#releaseSlot(slot);
        this.#createFailed(attempt, error);
      },
    );
  }

  /** True when every create under way is still waiting for a budget slot. */
  #allAwaitSlots(): boolean {
    for (const attempt of this.#attempts) if (!attempt.awaitingSlot) return false;
    return true;
  }

  /**
   * Stops waiting for budget slots nobody needs any more (their callers timed out or gave
   * up): a slot taken for nobody would sit idle while other processes wait for it.
   */
  #stopUnneededSlotWaits(): void {
    if (this.#options.budget === undefined || this.#closed) return;
    const needed = Math.max(this.#waiters.length, this.#options.min - this.#all.size, 0);
    let surplus = this.#attempts.size - needed;
    for (const attempt of [...this.#attempts]) {
      if (surplus <= 0) return;
      if (!attempt.awaitingSlot) continue;
      surplus--;
      attempt.controller.abort(new SluiceError('CREATE_CANCELLED', `${this.#options.name}: no caller needs this resource any more.`));
      this.#finishAttempt(attempt);
    }
  }

  /** Whether an idle (or returning) resource may keep its budget slot (see `ConnectionBudget.keep`). */
  #keepsSlot(entry: Entry<R>): boolean {
    const budget = this.#options.budget;
    if (budget === undefined || entry.slot === undefined) return true;
    try {
      return budget.keep(entry.slot, this.#all.size <= this.#options.min) !== false;
    } catch (error) {
      this.#emitError(error, 'hook');
      return true;
    }
  }

  /** The budget wants slots back: idle resources whose slots it asks for are destroyed. */
  #giveBackIdleSlots(): void {
    if (this.#closed) return;
    for (let index = 0; index < this.#idle.length; ) {
      const entry = this.#idle[index]!;
      if (this.#keepsSlot(entry)) {
        index++;
        continue;
      }
      this.#idle.splice(index, 1);
      this.#destroy(entry, 'budget');
    }
    this.#fill();
  }

  #releaseSlot(slot: BudgetSlot): void {
    try {
      slot.release();
    } catch (error) {
      this.#emitError(error, 'hook');
    }
  }

  #finishAttempt(attempt: CreateAttempt): boolean {
    if (attempt.finished) return false;
    attempt.finished = true;
    clearTimeout(attempt.timer);
    this.#attempts.delete(attempt);
    this.#notifyDrained();
    return true;
  }

  #createSucceeded(attempt: CreateAttempt, resource: R, slot: BudgetSlot | undefined): void {
    if (!this.#finishAttempt(attempt)) {
      // It came back after its attempt timed out or the pool closed: nobody wants it.
      this.#created++;
      this.#destroyResource(resource, this.#closed ? 'closed' : 'destroyed', slot);
      return;
    }
    this.#created++;
    this.#consecutiveCreateFailures = 0;
    this.#lastCreateError = undefined;
    const entry: Entry<R> = {
      resource,
      lifetimeTimer: undefined,
      lastReleasedAt: now(),
      state: 'leased',
      lease: undefined,
      retireReason: undefined,
      slot,
    };
    const { maxLifetimeMs, maxLifetimeJitterMs } = this.#options;
    if (maxLifetimeMs > 0) {
      const lifetime = maxLifetimeMs - Math.random() * maxLifetimeJitterMs;
      entry.lifetimeTimer = startTimer(lifetime, () => this.#expire(entry), true);
    }
    this.#all.add(entry);
    if (this.#events.has('create')) this.#events.emit('create', { resource });
    if (this.#closed) {
      this.#retire(entry, 'closed');
      return;
    }
    this.#offer(entry);
    this.#fill();
  }

  /** A resource reached its max lifetime: retired now if idle, else when given back. */
  #expire(entry: Entry<R>): void {
    entry.lifetimeTimer = undefined;
    if (entry.state === 'idle') {
      this.#idle.splice(this.#idle.indexOf(entry), 1);
      this.#retire(entry, 'lifetime');
    } else if (entry.state !== 'destroyed') {
      entry.retireReason ??= 'lifetime';
    }
  }

  #createFailed(attempt: CreateAttempt, error: unknown): void {
    if (!this.#finishAttempt(attempt)) return;
    this.#createErrors++;
    this.#emitError(error, 'create');
    if (this.#closed) return;
    this.#lastCreateError = { error };
    if (this.#isPermanent(error)) {
      this.#consecutiveCreateFailures = 0;
      this.#failWaiters(
        new PoolCreateError(
          `${this.#options.name}: creating a resource failed permanently (${describeError(error)}; see cause): ` +
            'retrying cannot help, so waiting callers fail now. Check the credentials and target.',
          { cause: error },
        ),
      );
      return;
    }
    this.#consecutiveCreateFailures++;
    if (this.#retryTimer === undefined && this.#createsWanted() > 0) {
      const delay = retryDelay(
        this.#consecutiveCreateFailures,
        this.#options.createRetryDelayMs,
        this.#options.createRetryMaxDelayMs,
      );
      // Unref'd when nobody waits: a pool warming `min` against a database that is down
      // must not keep the process alive. A caller waiting (even for ever) must.
      this.#retryTimer = startTimer(
        delay,
        () => {
          this.#retryTimer = undefined;
          this.#fill();
        },
        this.#waiters.length === 0,
      );
    }
  }

  #isPermanent(error: unknown): boolean {
    try {
      return this.#options.isPermanentCreateError(error) === true;
    } catch (hookError) {
      // A classifier that fails cannot say retrying is hopeless: keep retrying.
      this.#emitError(hookError, 'hook');
      return false;
    }
  }

  #failWaiters(error: unknown): void {
    for (let waiter = this.#waiters.shift(); waiter !== undefined; waiter = this.#waiters.shift()) {
      this.#leaveHeap(waiter);
      this.#detach(waiter);
      waiter.reject(error);
    }
    this.#stopUnneededSlotWaits();
  }

  // --- destroying -----------------------------------------------------------------------

  /** Destroys a resource that is out of the idle list, then creates a replacement if one is wanted. */
  #retire(entry: Entry<R>, reason: DestroyReason): void {
    this.#destroy(entry, reason);
    this.#fill();
  }

  #destroy(entry: Entry<R>, reason: DestroyReason): void {
    entry.state = 'destroyed';
    entry.lease = undefined;
    clearTimeout(entry.lifetimeTimer);
    this.#all.delete(entry);
    this.#destroyResource(entry.resource, reason, entry.slot);
    this.#notifyDrained();
  }

  /** Destroys a resource; its budget slot, if any, is released once the destroy has finished. */
  #destroyResource(resource: R, reason: DestroyReason, slot?: BudgetSlot): void {
    this.#destroyed++;
    if (this.#events.has('destroy')) this.#events.emit('destroy', { resource, reason });
    let done: Promise<void>;
    try {
      done = Promise.resolve(this.#options.destroy(resource)).then(
        () => undefined,
        (error: unknown) => this.#emitError(error, 'destroy'),
      );
    } catch (error) {
      this.#emitError(error, 'destroy');
      if (slot !== undefined) this.#releaseSlot(slot);
      return;
    }
    if (slot !== undefined) done = done.then(() => this.#releaseSlot(slot));
    this.#destroying.add(done);
    void done.then(() => this.#destroying.delete(done));
  }

  #emitError(error: unknown, phase: PoolErrorPhase): void {
    this.#events.emit('error', { error, phase });
  }

  // --- housekeeping ---------------------------------------------------------------------

  #housekeep(): void {
    const { idleTimeoutMs, leakDetectionMs, min } = this.#options;
    const time = now();
    // Oldest first: the front of the idle list came back longest ago.
    for (let index = 0; index < this.#idle.length; ) {
      const entry = this.#idle[index]!;
      if (idleTimeoutMs > 0 && time - entry.lastReleasedAt >= idleTimeoutMs && this.#all.size > min) {
        this.#idle.splice(index, 1);
        this.#destroy(entry, 'idle');
      } else {
        index++;
      }
    }
    if (leakDetectionMs > 0) {
      for (const entry of this.#all) {
        const lease = entry.lease;
        if (lease === undefined || lease.leakReported || time - lease.acquiredAt < leakDetectionMs) continue;
        lease.leakReported = true;
        this.#leaks++;
        this.#events.emit('leak', {
          resource: entry.resource,
          heldMs: time - lease.acquiredAt,
          stack: lease.acquireStack?.stack ?? '',
        });
      }
    }
    this.#fill();
  }

  // --- closing --------------------------------------------------------------------------

  async #close(): Promise<void> {
    const giveUpAt = now() + this.#options.closeTimeoutMs;
    clearInterval(this.#housekeepingTimer);
    clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    this.#failWaiters(new PoolClosedError('The pool closed while this caller waited for a resource.'));
    for (const attempt of [...this.#attempts]) {
      // Nothing was being created yet: no create error to report.
      if (attempt.awaitingSlot) this.#finishAttempt(attempt);
      attempt.controller.abort(new PoolClosedError());
    }
    for (const validation of this.#validations) validation.abort(new PoolClosedError());
    for (let entry = this.#idle.pop(); entry !== undefined; entry = this.#idle.pop()) this.#destroy(entry, 'closed');

    if (this.#busy() > 0) {
      await this.#waitUntil(
        giveUpAt,
        new Promise<void>((resolve) => {
          this.#onDrained = resolve;
        }),
      );
      this.#onDrained = undefined;
      // Whatever is still out is destroyed anyway; its holder's release() becomes a no-op.
      for (const entry of [...this.#all]) {
        if (entry.state === 'destroyed') continue; // re-entered from a destroy callback
        if (entry.state === 'leased') this.#leased--;
        this.#destroy(entry, 'closed');
      }
      for (const attempt of [...this.#attempts]) this.#finishAttempt(attempt);
    }
    const destroys = (async () => {
      while (this.#destroying.size > 0) await Promise.all(this.#destroying);
    })();
    if (!(await this.#waitUntil(giveUpAt, destroys))) {
      this.#emitError(
        new SluiceError(
          'CLOSE_TIMEOUT',
          `${this.#options.name}: ${this.#destroying.size} destroy call(s) had not finished when closeTimeoutMs ` +
            `(${this.#options.closeTimeoutMs} ms) ran out; close() stopped waiting for them.`,
        ),
        'close',
      );
    }
    // Last: the budget gives back what is still held (a destroy that never finished).
    await this.#options.budget?.close().catch((error: unknown) => this.#emitError(error, 'close'));
    this.#events.emit('close', {});
  }

  /** Waits for `promise` until the clock reaches `deadline`; true if it settled in time. */
  async #waitUntil(deadline: number, promise: Promise<void>): Promise<boolean> {
    let timer: Timer | undefined;
    const expired = new Promise<false>((resolve) => {
      timer = startTimer(deadline - now(), () => resolve(false), false);
    });
    try {
      return await Promise.race([promise.then(() => true), expired]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Resources or creates the close still waits for. */
  #busy(): number {
    return this.#all.size + this.#attempts.size;
  }

  #notifyDrained(): void {
    if (this.#onDrained !== undefined && this.#busy() === 0) this.#onDrained();
  }
}

/**
 * Creates a pool of resources made by `options.create`.
 *
 * ```ts
 * const pool = createPool({ create: () => connect(url), destroy: (c) => c.end(), max: 10 });
 * const rows = await pool.use((conn) => conn.query('select 1'), { timeoutMs: 500 });
 * ```
 */
export function createPool<R>(options: PoolOptions<R>): Pool<R> {
  return new Pool(options);
}
