import { InvalidOptionError } from '../errors.js';
import type { ConnectionBudget } from './budget.js';

/** What the pool passes to `create`. */
export interface CreateContext {
  /**
   * Aborted when the pool closes or `createTimeoutMs` passes. A factory should pass it on
   * to whatever it awaits (a connect call); a resource it still returns is destroyed.
   */
  readonly signal: AbortSignal;
}

/** What the pool passes to `validate`. */
export interface ValidateContext {
  /** Aborted when the caller gives up or `validateTimeoutMs` passes. */
  readonly signal: AbortSignal;
}

/** How idle resources are handed out. */
export type ReuseOrder = 'lifo' | 'fifo';

export interface PoolOptions<R> {
  /**
   * Makes a new resource. Called in the background, never more often than waiters and
   * `min` need. A rejection is retried with backoff until the waiters' deadlines, unless
   * `isPermanentCreateError` says retrying cannot help.
   */
  readonly create: (context: CreateContext) => Promise<R> | R;
  /** Frees a resource. Called exactly once per created resource. Errors go to the `error` event. */
  readonly destroy: (resource: R) => Promise<void> | void;
  /**
   * Checks a resource that sat idle longer than `validateAfterIdleMs` before it is handed
   * out. Returning `false` or throwing destroys it, and the caller gets another one.
   */
  readonly validate?: (resource: R, context: ValidateContext) => Promise<boolean> | boolean;

  /** Most resources alive at once, counting those being created. Required: there is no safe guess. */
  readonly max: number;
  /** Resources kept warm even when idle. Default 0. */
  readonly min?: number;

  /**
   * How long `acquire` waits, by default, before failing with `PoolTimeoutError`. A caller
   * can pass its own `timeoutMs`. Default 30 s: long enough to ride out a brief spike, short
   * enough that a caller hears about an outage. `Infinity` waits for ever.
   */
  readonly acquireTimeoutMs?: number;
  /**
   * How many callers may wait at once; beyond it `acquire` fails fast with
   * `PoolQueueFullError` (load shedding). Default `Infinity`.
   */
  readonly maxWaiting?: number;

  /** An idle resource older than this is destroyed (never below `min`). 0 disables. Default 10 min. */
  readonly idleTimeoutMs?: number;
  /**
   * A resource is retired after this long, once it is idle (never while leased), so that
   * servers and load balancers can rotate connections. 0 disables. Default 30 min.
   */
  readonly maxLifetimeMs?: number;
  /**
   * Each resource's lifetime is shortened by a random amount up to this, so resources
   * created together don't all retire together. Default 2.5% of `maxLifetimeMs`.
   */
  readonly maxLifetimeJitterMs?: number;

  /** Resources idle at least this long are validated on checkout (if `validate` is set). Default 1 s. */
  readonly validateAfterIdleMs?: number;
  /** A validation taking longer than this counts as failed. Default 5 s. */
  readonly validateTimeoutMs?: number;

  /** A `create` call taking longer than this is aborted and counts as a failed attempt. Default 30 s. */
  readonly createTimeoutMs?: number;
  /** The first delay before retrying a failed create; it doubles per failure, with jitter. Default 50 ms. */
  readonly createRetryDelayMs?: number;
  /** The longest delay between create retries. Default 2 s. */
  readonly createRetryMaxDelayMs?: number;
  /**
   * Says whether a create error is permanent: the waiters fail at once with
   * `PoolCreateError` instead of retrying. By default an error carrying
   * `permanent: true` is permanent, so a factory can mark one with
   * `throw Object.assign(new Error('bad password'), { permanent: true })`.
   */
  readonly isPermanentCreateError?: (error: unknown) => boolean;
  /**
   * Says whether an error thrown inside `use()` leaves the resource unusable: if so it is
   * destroyed instead of returned. Default: never.
   */
  readonly isFatalError?: (error: unknown, resource: R) => boolean;

  /**
   * A lease held longer than this raises a `leak` event with the stack of the `acquire`
   * call. 0 disables. Default 0: capturing a stack on every acquire costs about a microsecond.
   */
  readonly leakDetectionMs?: number;

  /** `lifo` (default) keeps a few resources hot and lets the rest idle out; `fifo` spreads use evenly. */
  readonly reuse?: ReuseOrder;
  /** How long `close()` waits for leases to come back before destroying them anyway. Default 10 s. */
  readonly closeTimeoutMs?: number;
  /**
   * How often idle and leak checks run (max lifetime has a timer of its own per resource).
   * Default: a quarter of the shorter of `idleTimeoutMs` and `leakDetectionMs`, between
   * 10 ms and 30 s.
   */
  readonly housekeepingIntervalMs?: number;
  /** A name used in error messages, to tell pools apart. Default `pool`. */
  readonly name?: string;
  /**
   * A limit shared with other pools, in this process or others (see `ConnectionBudget`):
   * a resource is created only with a slot of it, and gives the slot back once destroyed.
   * `min` resources hold slots too. The pool closes the budget when it closes; a budget
   * serves one pool. Default: none (only `max` bounds the pool).
   */
  readonly budget?: ConnectionBudget;
}

/**
 * The settings of a pool whose resource lifecycle (`create`, `destroy`, `validate` and the
 * error classifiers) belongs to whoever makes it: what `connect()` and `connectRedis()` take
 * as their `pool` option.
 */
export type PoolSettings<R> = Partial<
  Omit<PoolOptions<R>, 'create' | 'destroy' | 'validate' | 'isFatalError' | 'isPermanentCreateError'>
>;

/** The options with every default filled in and checked. */
export interface ResolvedPoolOptions<R> {
  readonly create: (context: CreateContext) => Promise<R> | R;
  readonly destroy: (resource: R) => Promise<void> | void;
  readonly validate: ((resource: R, context: ValidateContext) => Promise<boolean> | boolean) | undefined;
  readonly max: number;
  readonly min: number;
  readonly acquireTimeoutMs: number;
  readonly maxWaiting: number;
  readonly idleTimeoutMs: number;
  readonly maxLifetimeMs: number;
  readonly maxLifetimeJitterMs: number;
  readonly validateAfterIdleMs: number;
  readonly validateTimeoutMs: number;
  readonly createTimeoutMs: number;
  readonly createRetryDelayMs: number;
  readonly createRetryMaxDelayMs: number;
  readonly isPermanentCreateError: (error: unknown) => boolean;
  readonly isFatalError: ((error: unknown, resource: R) => boolean) | undefined;
  readonly leakDetectionMs: number;
  readonly reuse: ReuseOrder;
  readonly closeTimeoutMs: number;
  readonly housekeepingIntervalMs: number;
  readonly name: string;
  readonly budget: ConnectionBudget | undefined;
}

const SECOND = 1_000;
/** `acquireTimeoutMs` when not set. */
export const DEFAULT_ACQUIRE_TIMEOUT_MS = 30 * SECOND;
const MINUTE = 60 * SECOND;

function isMarkedPermanent(error: unknown): boolean {
  return (
    error !== null && typeof error === 'object' && (error as { readonly permanent?: unknown }).permanent === true
  );
}

function checkFunction(name: string, value: unknown, required: boolean): void {
  if (value === undefined && !required) return;
  if (typeof value !== 'function') {
    throw new InvalidOptionError(name, `expected a function, got ${describeValue(value)}.`);
  }
}

/**
 * Shows a rejected value without echoing text: an option given a connection string by
 * mistake must not put it in an error message.
 */
function describeValue(value: unknown): string {
  if (typeof value === 'string') return 'a string';
  if (typeof value === 'number' || typeof value === 'boolean' || value === undefined || value === null) {
    return String(value);
  }
  return typeof value;
}

function integerAtLeast(name: string, value: number | undefined, fallback: number, least: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < least) {
    throw new InvalidOptionError(name, `expected an integer >= ${least}, got ${describeValue(value)}.`);
  }
  return value;
}

/** The longest delay a Node timer honours (about 24.8 days); longer ones would fire at once. */
export const MAX_DELAY_MS = 2 ** 31 - 1;

/**
 * Milliseconds: a number from `least` to `MAX_DELAY_MS`, or `Infinity` where
 * `allowInfinity` (for "never").
 */
export function checkMilliseconds(
  name: string,
  value: number | undefined,
  fallback: number,
  { allowInfinity = false, least = 0 }: { readonly allowInfinity?: boolean; readonly least?: number } = {},
): number {
  if (value === undefined) return fallback;
  const ok =
    typeof value === 'number' &&
    value >= least &&
    (value <= MAX_DELAY_MS || (allowInfinity && value === Infinity));
  if (!ok) {
    const range = `a number of milliseconds from ${least} to ${MAX_DELAY_MS}`;
    const expected = allowInfinity ? `${range}, or Infinity` : range;
    throw new InvalidOptionError(name, `expected ${expected}, got ${describeValue(value)}.`);
  }
  return value;
}

function defaultHousekeepingInterval(idleTimeoutMs: number, leakDetectionMs: number): number {
  const enabled = [idleTimeoutMs, leakDetectionMs].filter((ms) => ms > 0);
  const shortest = enabled.length > 0 ? Math.min(...enabled) : 30 * SECOND;
  return Math.min(30 * SECOND, Math.max(10, Math.floor(shortest / 4)));
}

function checkBudget(budget: ConnectionBudget | undefined): ConnectionBudget | undefined {
  if (budget === undefined) return undefined;
  const complete =
    budget !== null &&
    typeof budget === 'object' &&
    (['take', 'keep', 'attach', 'close'] as const).every((method) => typeof budget[method] === 'function');
  if (!complete) {
    throw new InvalidOptionError('budget', 'expected a ConnectionBudget (take, keep, attach and close), e.g. redisConnectionBudget(...).');
  }
  return budget;
}

export function resolvePoolOptions<R>(options: PoolOptions<R>): ResolvedPoolOptions<R> {
  if (options === null || typeof options !== 'object') {
    throw new InvalidOptionError('options', 'expected an object with at least create, destroy and max.');
  }
  checkFunction('create', options.create, true);
  checkFunction('destroy', options.destroy, true);
  checkFunction('validate', options.validate, false);
  checkFunction('isPermanentCreateError', options.isPermanentCreateError, false);
  checkFunction('isFatalError', options.isFatalError, false);

  if (options.max === undefined) {
    throw new InvalidOptionError('max', 'required: how many resources may exist at once (e.g. 10).');
  }
  const max = integerAtLeast('max', options.max, 0, 1);
  const min = integerAtLeast('min', options.min, 0, 0);
  if (min > max) throw new InvalidOptionError('min', `min (${min}) cannot exceed max (${max}).`);

  const maxWaiting =
    options.maxWaiting === Infinity ? Infinity : integerAtLeast('maxWaiting', options.maxWaiting, Infinity, 0);
  const acquireTimeoutMs = checkMilliseconds('acquireTimeoutMs', options.acquireTimeoutMs, DEFAULT_ACQUIRE_TIMEOUT_MS, { allowInfinity: true });
  const idleTimeoutMs = checkMilliseconds('idleTimeoutMs', options.idleTimeoutMs, 10 * MINUTE);
  const maxLifetimeMs = checkMilliseconds('maxLifetimeMs', options.maxLifetimeMs, 30 * MINUTE);
  const maxLifetimeJitterMs = checkMilliseconds(
    'maxLifetimeJitterMs',
    options.maxLifetimeJitterMs,
    Math.floor(maxLifetimeMs / 40),
  );
  if (maxLifetimeMs > 0 && maxLifetimeJitterMs >= maxLifetimeMs) {
    throw new InvalidOptionError('maxLifetimeJitterMs', 'must be smaller than maxLifetimeMs.');
  }
  const leakDetectionMs = checkMilliseconds('leakDetectionMs', options.leakDetectionMs, 0);
  const createRetryDelayMs = checkMilliseconds('createRetryDelayMs', options.createRetryDelayMs, 50);
  const createRetryMaxDelayMs = checkMilliseconds(
    'createRetryMaxDelayMs',
    options.createRetryMaxDelayMs,
    Math.max(2 * SECOND, createRetryDelayMs),
  );
  if (createRetryMaxDelayMs < createRetryDelayMs) {
    throw new InvalidOptionError('createRetryMaxDelayMs', 'cannot be smaller than createRetryDelayMs.');
  }
  const reuse = options.reuse ?? 'lifo';
  if (reuse !== 'lifo' && reuse !== 'fifo') {
    throw new InvalidOptionError('reuse', `expected 'lifo' or 'fifo', got ${describeValue(reuse)}.`);
  }
  const housekeepingIntervalMs = checkMilliseconds(
    'housekeepingIntervalMs',
    options.housekeepingIntervalMs,
    defaultHousekeepingInterval(idleTimeoutMs, leakDetectionMs),
    { least: 1 },
  );

  return {
    create: options.create,
    destroy: options.destroy,
    validate: options.validate,
    max,
    min,
    acquireTimeoutMs,
    maxWaiting,
    idleTimeoutMs,
    maxLifetimeMs,
    maxLifetimeJitterMs,
    validateAfterIdleMs: checkMilliseconds('validateAfterIdleMs', options.validateAfterIdleMs, SECOND),
    // At least 1 ms: unlike the idle and lifetime settings, 0 cannot mean "off" here.
    validateTimeoutMs: checkMilliseconds('validateTimeoutMs', options.validateTimeoutMs, 5 * SECOND, {
      allowInfinity: true,
      least: 1,
    }),
    createTimeoutMs: checkMilliseconds('createTimeoutMs', options.createTimeoutMs, 30 * SECOND, {
      allowInfinity: true,
      least: 1,
    }),
    createRetryDelayMs,
    createRetryMaxDelayMs,
    isPermanentCreateError: options.isPermanentCreateError ?? isMarkedPermanent,
    isFatalError: options.isFatalError,
    leakDetectionMs,
    reuse,
    closeTimeoutMs: checkMilliseconds('closeTimeoutMs', options.closeTimeoutMs, 10 * SECOND, { allowInfinity: true }),
    housekeepingIntervalMs,
    name: options.name ?? 'pool',
    budget: checkBudget(options.budget),
  };
}
