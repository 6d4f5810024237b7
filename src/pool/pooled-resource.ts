import type { BudgetSlot } from './budget.js';
import type { DestroyReason } from './events.js';
import type { PoolLease } from './lease.js';

export type ResourceState = 'idle' | 'leased' | 'validating' | 'destroyed';

/** The pool's record of one live resource. */
export interface PooledResource<R> {
  readonly resource: R;
  /**
   * Fires at the end of its jittered max lifetime: retires it if idle, else marks it to be
   * retired when given back. One unref'd timer per resource, set at create, so neither
   * checkout nor release pays for a lifetime check.
   */
  lifetimeTimer: ReturnType<typeof setTimeout> | undefined;
  /** When it last came back to the pool (or was created). Drives idle timeout and validation. */
  lastReleasedAt: number;
  state: ResourceState;
  lease: PoolLease<R, PooledResource<R>> | undefined;
  /** Set when it must be destroyed as soon as its holder gives it back (evicted while busy). */
  retireReason: DestroyReason | undefined;
  /** Its slot of the pool's `budget`, if the pool has one: released once it is destroyed. */
  readonly slot: BudgetSlot | undefined;
}
