/**
 * A limit on resources shared beyond one pool: several processes, each with a pool of its
 * own, together never hold more than the budget allows (a database's `max_connections`).
 *
 * The pool takes a slot before it creates a resource and gives it back once the resource
 * is destroyed, so a resource never exists without a slot, even for a moment. Creation
 * still runs on the pool's one background path: a create waiting for a slot is a pending
 * create, and the callers wait on the pool as always, under their own deadlines.
 *
 * A budget can ask for slots back: when other holders need them, `keep()` turns false for
 * some of this pool's slots, and the pool destroys those resources as soon as they are idle
 * (never while leased). sluice's Redis budget (`redisConnectionBudget`) implements this.
 */
export interface ConnectionBudget {
  /** What the budget is, for error messages: `Redis budget "app:db" (limit 12)`. No secrets. */
  readonly description: string;
  /**
   * Waits for a free slot. Rejects with `signal.reason` once `signal` aborts (the pool no
   * longer needs it: its callers left, or it closed), or with an error when the budget
   * cannot be consulted and its policy is to refuse (the pool retries that with backoff,
   * as it does a failed create).
   */
  take(signal: AbortSignal): Promise<BudgetSlot>;
  /**
   * Whether a resource holding `slot` may stay in the pool now that it is idle. False
   * asks for the slot back: the pool destroys the resource, then releases the slot.
   * `required` is true when the pool would fall below its `min` without it: then only a
   * slot that is no longer the pool's (its lease lost) may be refused.
   */
  keep(slot: BudgetSlot, required: boolean): boolean;
  /**
   * Called once, by the pool that uses the budget: `recheck` is to be called whenever
   * `keep()` may have turned false for slots whose resources sit idle.
   */
  attach(recheck: () => void): void;
  /**
   * Gives back every slot still held and stops background work (lease renewal). Called by
   * the pool's `close()` once its resources are destroyed. Never rejects.
   */
  close(): Promise<void>;
}

/** One slot of a `ConnectionBudget`, held by one resource (or by a create under way). */
export interface BudgetSlot {
  /** Gives the slot back. Called exactly once, after its resource is destroyed. */
  release(): void;
}
