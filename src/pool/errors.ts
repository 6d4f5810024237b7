import { SluiceError } from '../errors.js';

/** Why an acquire timed out; see `PoolTimeoutError`. */
export type PoolTimeoutReason = 'exhausted' | 'create-failed' | 'create-pending' | 'validation' | 'budget';

/**
 * An acquire's deadline passed before a resource was free.
 *
 * `reason` says why, and so does the message:
 * - `exhausted`: every resource was in use and none came back in time. The message
 *   carries the pool's size, in-use and waiting counts; raise `max`, shorten what holds
 *   leases, or shed load with `maxWaiting`.
 * - `create-failed`: the pool was trying to create a resource and the last attempt
 *   failed; that error is the `cause` (the database is likely unreachable).
 * - `create-pending`: a create was under way but had neither finished nor failed (a
 *   server that accepts connections but does not answer, or a network that drops them).
 * - `validation`: the resource this caller got was still being validated (a zero or very
 *   short deadline); the resource stays in the pool.
 * - `budget`: the pool had room, but no slot of its shared `budget` came free in time:
 *   other pools (other processes) hold them all.
 */
export class PoolTimeoutError extends SluiceError {
  readonly reason: PoolTimeoutReason;
  /** How long the caller waited, in milliseconds. */
  readonly waitedMs: number;

  constructor(
    reason: PoolTimeoutReason,
    waitedMs: number,
    message: string,
    options?: { readonly cause?: unknown },
  ) {
    super('POOL_TIMEOUT', message, options);
    this.reason = reason;
    this.waitedMs = waitedMs;
  }
}

/** The pool is closed, or closed while the caller waited. */
export class PoolClosedError extends SluiceError {
  constructor(message = 'The pool is closed: create a new pool to acquire again.') {
    super('POOL_CLOSED', message);
  }
}

/**
 * Load shedding: `maxWaiting` callers were already queued, so this one failed at once
 * instead of joining a queue the pool cannot serve in time.
 */
export class PoolQueueFullError extends SluiceError {
  readonly maxWaiting: number;

  constructor(maxWaiting: number) {
    super(
      'POOL_QUEUE_FULL',
      `The pool's wait queue is full (maxWaiting: ${maxWaiting}): the pool is overloaded; ` +
        'retry later, or raise maxWaiting if callers can afford to wait.',
    );
    this.maxWaiting = maxWaiting;
  }
}

/** `release()` or `destroy()` was called on a lease that was already released or destroyed. */
export class LeaseReleasedError extends SluiceError {
  constructor() {
    super(
      'LEASE_RELEASED',
      'This lease was already released or destroyed: a lease is given back exactly once. ' +
        'Look for a second release() on the same lease (e.g. in both a try block and a finally).',
    );
  }
}

/**
 * The resource factory failed with an error it marked permanent (a wrong password, an
 * unknown database): retrying cannot help, so waiters fail at once. The factory's error
 * is the `cause`.
 */
export class PoolCreateError extends SluiceError {
  constructor(message: string, options: { readonly cause: unknown }) {
    super('POOL_CREATE_FAILED', message, options);
  }
}
