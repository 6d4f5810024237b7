import type { DestroyReason } from './events.js';
import type { PoolLease } from './lease.js';

export type ResourceState = 'idle' | 'leased' | 'validating' | 'destroyed';

/** The pool's record of one live resource. */
export interface PooledResource<R> {
  readonly resource: R;
  /** When it retires (its jittered max lifetime), on the `performance.now()` clock; `Infinity` for never. */
  readonly expiresAt: number;
  /** When it last came back to the pool (or was created). Drives idle timeout and validation. */
  lastReleasedAt: number;
  state: ResourceState;
  lease: PoolLease<R, PooledResource<R>> | undefined;
  /** Set when it must be destroyed as soon as its holder gives it back (evicted while busy). */
  retireReason: DestroyReason | undefined;
}
