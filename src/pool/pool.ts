import { describeError } from '../errors.js';
import { DeadlineHeap } from './deadline-heap.js';
import { PoolClosedError, PoolCreateError, PoolQueueFullError, PoolTimeoutError } from './errors.js';
import {
  PoolEventEmitter,
  type DestroyReason,
  type PoolErrorPhase,
  type PoolEventName,
  type PoolListener,
} from './events.js';
import { PoolLease, type Lease, type LeaseOwner, type StackHolder } from './lease.js';
import { checkMilliseconds, resolvePoolOptions, type PoolOptions, type ResolvedPoolOptions } from './options.js';
import type { PooledResource, ResourceState } from './pooled-resource.js';
import type { PoolStats } from './stats.js';
import { retryDelay, startTimer } from './timers.js';
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
  readonly #lifo: boolean;
  readonly #leakDetection: boolean;

  #leased = 0;
  #validating = 0;
  #deadlineTimer: Timer | undefined = undefined;
  #deadlineTimerAt = Infinity;
  #retryTimer: Timer | undefined = undefined;
  #housekeepingTimer: ReturnType<typeof setInterval> | undefined;
  #consecutiveCreateFailures = 0;
  #lastCreateError: { readonly error: unknown } | undefined = undefined;
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
      if (this.#options.isFatalError?.(error, lease.resource) === true) lease.destroy();
      else lease.release();
      throw error;
    }
    lease.release();
    return result;
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
        this.#destroy(entry, 'evicted');
        this.#fill();
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
      closed: this.#closing !== undefined,
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
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** Called by a lease on `release()` / `destroy()`, and by `use()`. */
  returnLease(lease: PoolLeaseOf<R>, destroy: boolean): void {
    const entry = lease.entry;
    if (entry.state === 'destroyed') return; // destroyed by a forced close: nothing to give back
    entry.lease = undefined;
    this.#leased--;
    this.#released++;
    if (this.#events.has('release')) this.#events.emit('release', { resource: entry.resource });
    if (destroy) return this.#retire(entry, 'destroyed');
    if (entry.retireReason !== undefined) return this.#retire(entry, entry.retireReason);
    if (this.#closing !== undefined) return this.#retire(entry, 'closed');
    const time = now();
    if (time >= entry.expiresAt) return this.#retire(entry, 'lifetime');
    entry.lastReleasedAt = time;
    this.#offer(entry);
  }

  // --- acquiring ------------------------------------------------------------------------

  #timeoutOf(options: AcquireOptions | undefined): number {
    const timeoutMs = options?.timeoutMs;
    if (timeoutMs === undefined) return this.#options.acquireTimeoutMs;
    return checkMilliseconds('timeoutMs', timeoutMs, 0, true);
  }

  #acquire(
    signal: AbortSignal | undefined,
    timeoutMs: number,
    stack: StackHolder | undefined,
    startedAt?: number,
  ): Promise<PoolLeaseOf<R>> {
    if (this.#closing !== undefined) return Promise.reject(new PoolClosedError());
    if (signal?.aborted === true) {
      this.#aborted++;
      return Promise.reject(signal.reason);
    }
    // Fast path. `idle > 0` implies nobody waits, so taking it is fair.
    const entry = this.#takeIdle();
    if (entry !== undefined) {
      if (this.#options.validate !== undefined && now() - entry.lastReleasedAt >= this.#options.validateAfterIdleMs) {
        return this.#validateThenLend(entry, signal, timeoutMs, stack, startedAt ?? now());
      }
      return Promise.resolve(this.#lend(entry, stack, 0));
    }
    if (timeoutMs <= 0) {
      // A zero deadline means "only if one is free now": no queue, no create.
      this.#timedOut++;
      return Promise.reject(this.#timeoutError(0));
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
      this.#waiters.push(waiter);
      if (waiter.deadline !== Infinity) {
        this.#deadlines.push(waiter);
        if (waiter.deadline < this.#deadlineTimerAt) this.#armDeadlineTimer(waiter.deadline);
      }
      if (signal !== undefined) {
        waiter.onAbort = () => this.#abortWaiter(waiter);
        signal.addEventListener('abort', waiter.onAbort, { once: true });
      }
      this.#fill();
    });
  }

  /** Marks a waiter that left the queue as settled and stops listening to its signal. */
  #detach(waiter: Waiter<PoolLeaseOf<R>>): void {
    waiter.settled = true;
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
    const deadline = startedAt + timeoutMs;
    const valid = await this.#validate(entry.resource, signal, Math.min(this.#options.validateTimeoutMs, deadline - now()));
    this.#validating--;
    if ((entry.state as ResourceState) === 'destroyed') {
      // A forced close destroyed it meanwhile (the `await` above lets state change).
      throw new PoolClosedError();
    }
    const time = now();
    if (!valid || entry.retireReason !== undefined || this.#closing !== undefined) {
      if (!valid) this.#validationFailures++;
      this.#retire(entry, entry.retireReason ?? (this.#closing !== undefined ? 'closed' : 'validation'));
    } else if (signal?.aborted === true || time >= deadline) {
      // Good, but its caller gave up meanwhile: it goes to the next one.
      entry.lastReleasedAt = time;
      this.#offer(entry);
    } else {
      return this.#lend(entry, stack, time - startedAt);
    }
    if (signal?.aborted === true) {
      this.#aborted++;
      throw signal.reason;
    }
    if (time >= deadline) {
      this.#timedOut++;
      throw this.#timeoutError(time - startedAt);
    }
    // Try again with whatever is left of this caller's deadline.
    return this.#acquire(signal, deadline - time, stack, startedAt);
  }

  async #validate(resource: R, signal: AbortSignal | undefined, timeoutMs: number): Promise<boolean> {
    const controller = new AbortController();
    const onAbort = (): void => controller.abort(signal?.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    const timer = startTimer(timeoutMs, () => controller.abort(new Error('validation timed out')), true);
    try {
      const check = Promise.resolve(this.#options.validate!(resource, { signal: controller.signal }));
      const aborted = new Promise<false>((resolve) => {
        if (controller.signal.aborted) resolve(false);
        controller.signal.addEventListener('abort', () => resolve(false), { once: true });
      });
      return (await Promise.race([check, aborted])) === true;
    } catch (error) {
      this.#emitError(error, 'validate');
      return false;
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      controller.abort(); // lets the `aborted` promise settle; nothing else listens any more
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
    if (this.#closing !== undefined || this.#retryTimer !== undefined) return;
    for (let wanted = this.#createsWanted(); wanted > 0; wanted--) this.#startCreate();
  }

  #startCreate(): void {
    const attempt: CreateAttempt = { controller: new AbortController(), timer: undefined, finished: false };
    this.#attempts.add(attempt);
    attempt.timer = startTimer(
      this.#options.createTimeoutMs,
      () => {
        const error = new Error(`create timed out after ${this.#options.createTimeoutMs} ms`);
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
      (resource) => this.#createSucceeded(attempt, resource),
      (error: unknown) => this.#createFailed(attempt, error),
    );
  }

  #finishAttempt(attempt: CreateAttempt): boolean {
    if (attempt.finished) return false;
    attempt.finished = true;
    clearTimeout(attempt.timer);
    this.#attempts.delete(attempt);
    this.#notifyDrained();
    return true;
  }

  #createSucceeded(attempt: CreateAttempt, resource: R): void {
    if (!this.#finishAttempt(attempt)) {
      // It came back after its attempt timed out or the pool closed: nobody wants it.
      this.#created++;
      this.#destroyResource(resource, this.#closing !== undefined ? 'closed' : 'destroyed');
      return;
    }
    this.#created++;
    this.#consecutiveCreateFailures = 0;
    this.#lastCreateError = undefined;
    const entry: Entry<R> = {
      resource,
      expiresAt: this.#expiryFor(now()),
      lastReleasedAt: now(),
      state: 'leased',
      lease: undefined,
      retireReason: undefined,
    };
    this.#all.add(entry);
    if (this.#events.has('create')) this.#events.emit('create', { resource });
    if (this.#closing !== undefined) {
      this.#retire(entry, 'closed');
      return;
    }
    this.#offer(entry);
    this.#fill();
  }

  #expiryFor(createdAt: number): number {
    const { maxLifetimeMs, maxLifetimeJitterMs } = this.#options;
    if (maxLifetimeMs === 0) return Infinity;
    return createdAt + maxLifetimeMs - Math.random() * maxLifetimeJitterMs;
  }

  #createFailed(attempt: CreateAttempt, error: unknown): void {
    if (!this.#finishAttempt(attempt)) return;
    this.#createErrors++;
    this.#emitError(error, 'create');
    if (this.#closing !== undefined) return;
    this.#lastCreateError = { error };
    if (this.#options.isPermanentCreateError(error)) {
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
      // Unref'd: a pool warming `min` against a database that is down must not keep the
      // process alive; waiters have their own deadline timer that does.
      this.#retryTimer = startTimer(
        delay,
        () => {
          this.#retryTimer = undefined;
          this.#fill();
        },
        true,
      );
    }
  }

  #failWaiters(error: unknown): void {
    for (let waiter = this.#waiters.shift(); waiter !== undefined; waiter = this.#waiters.shift()) {
      this.#leaveHeap(waiter);
      this.#detach(waiter);
      waiter.reject(error);
    }
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
    this.#all.delete(entry);
    this.#destroyResource(entry.resource, reason);
    this.#notifyDrained();
  }

  #destroyResource(resource: R, reason: DestroyReason): void {
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
      return;
    }
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
      const expired = time >= entry.expiresAt;
      const idledOut = idleTimeoutMs > 0 && time - entry.lastReleasedAt >= idleTimeoutMs && this.#all.size > min;
      if (expired || idledOut) {
        this.#idle.splice(index, 1);
        this.#destroy(entry, expired ? 'lifetime' : 'idle');
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
    clearInterval(this.#housekeepingTimer);
    clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    this.#failWaiters(new PoolClosedError('The pool closed while this caller waited for a resource.'));
    for (const attempt of this.#attempts) attempt.controller.abort(new PoolClosedError());
    for (let entry = this.#idle.pop(); entry !== undefined; entry = this.#idle.pop()) this.#destroy(entry, 'closed');

    if (this.#busy() > 0) {
      let graceTimer: Timer | undefined;
      await new Promise<void>((resolve) => {
        this.#onDrained = resolve;
        graceTimer = startTimer(this.#options.closeTimeoutMs, resolve, false);
      });
      clearTimeout(graceTimer);
      this.#onDrained = undefined;
      // Whatever is still out is destroyed anyway; its holder's release() becomes a no-op.
      for (const entry of [...this.#all]) {
        if (entry.state === 'leased') this.#leased--;
        this.#destroy(entry, 'closed');
      }
      for (const attempt of [...this.#attempts]) this.#finishAttempt(attempt);
    }
    while (this.#destroying.size > 0) await Promise.all(this.#destroying);
    this.#events.emit('close', {});
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
