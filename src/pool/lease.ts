import { LeaseReleasedError } from './errors.js';

/**
 * One caller's hold on one resource, from `acquire` until it is given back exactly once,
 * with `release()` (back to the pool) or `destroy()` (the resource is broken).
 *
 * Supports `using`: `using lease = await pool.acquire()` releases it at the end of the
 * block unless it was already given back.
 */
export interface Lease<R> {
  readonly resource: R;
  /** True once `release()` or `destroy()` was called. */
  readonly released: boolean;
  /** Gives the resource back for reuse. A second call throws `LeaseReleasedError`. */
  release(): void;
  /** Gives the resource back to be destroyed, e.g. after a fatal error. A second call throws. */
  destroy(): void;
  [Symbol.dispose](): void;
}

/**
 * The method a lease calls to give itself back. Keyed by a symbol that is not exported
 * from the package, so users cannot bypass the lease's release-once guard.
 */
export const RETURN_LEASE: unique symbol = Symbol('sluice.returnLease');

/** The side of the pool a lease reports back to. */
export interface LeaseOwner<R, E> {
  [RETURN_LEASE](lease: PoolLease<R, E>, destroy: boolean): void;
}

/** Holds the acquire call's stack, captured lazily formatted; read only if a leak is reported. */
export interface StackHolder {
  readonly stack?: string;
}

export class PoolLease<R, E> implements Lease<R> {
  readonly resource: R;
  /** The pool's record for the resource. */
  readonly entry: E;
  /** `performance.now()` at checkout when leak detection is on, else 0. */
  readonly acquiredAt: number;
  readonly acquireStack: StackHolder | undefined;
  leakReported = false;
  #owner: LeaseOwner<R, E>;
  #released = false;

  constructor(owner: LeaseOwner<R, E>, entry: E, resource: R, acquiredAt: number, acquireStack: StackHolder | undefined) {
    this.#owner = owner;
    this.entry = entry;
    this.resource = resource;
    this.acquiredAt = acquiredAt;
    this.acquireStack = acquireStack;
  }

  get released(): boolean {
    return this.#released;
  }

  release(): void {
    this.#giveBack(false);
  }

  destroy(): void {
    this.#giveBack(true);
  }

  [Symbol.dispose](): void {
    if (!this.#released) this.#giveBack(false);
  }

  #giveBack(destroy: boolean): void {
    if (this.#released) throw new LeaseReleasedError();
    this.#released = true;
    this.#owner[RETURN_LEASE](this, destroy);
  }
}
