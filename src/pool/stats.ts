/** Running totals since the pool was created. They only ever grow. */
export interface PoolTotals {
  /** Leases handed out. */
  readonly acquired: number;
  /** Leases given back with `release()`. */
  readonly released: number;
  /** Acquires that failed because their deadline passed. */
  readonly timedOut: number;
  /** Acquires whose `AbortSignal` aborted. */
  readonly aborted: number;
  /** Acquires refused at once by load shedding (`maxWaiting`). */
  readonly rejected: number;
  /** Resources created. */
  readonly created: number;
  /** Resources destroyed. */
  readonly destroyed: number;
  /** Failed create attempts (each retry counts). */
  readonly createErrors: number;
  /** Resources that failed validation on checkout. */
  readonly validationFailures: number;
  /** `leak` events raised. */
  readonly leaks: number;
}

/** A snapshot of the pool. Cheap: take one as often as you like. */
export interface PoolStats {
  /** Live resources: idle + in use. Creates still pending are not counted here. */
  readonly size: number;
  /** Resources waiting in the pool to be handed out. */
  readonly idle: number;
  /** Resources leased out, or being validated for a caller. */
  readonly inUse: number;
  /** Callers queued for a resource. */
  readonly waiting: number;
  /** Create calls in flight. `size + pendingCreates <= max` always holds. */
  readonly pendingCreates: number;
  readonly max: number;
  readonly min: number;
  /**
   * The queue's bound (`Infinity`: none). An acquire is shed (`PoolQueueFullError`) when
   * `idle === 0 && waiting >= maxWaiting`: a service can apply the same test at its door
   * and refuse a request before doing any of its work.
   */
  readonly maxWaiting: number;
  readonly closed: boolean;
  readonly totals: PoolTotals;
}
