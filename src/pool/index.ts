export { createPool, Pool, type AcquireOptions, type UseContext } from './pool.js';
export type { Lease } from './lease.js';
export type { CreateContext, PoolOptions, PoolSettings, ReuseOrder, ValidateContext } from './options.js';
export type { DestroyReason, PoolErrorPhase, PoolEventName, PoolEvents, PoolListener } from './events.js';
export type { PoolStats, PoolTotals } from './stats.js';
export { type PoolTimeoutReason, LeaseReleasedError, PoolClosedError, PoolCreateError, PoolQueueFullError, PoolTimeoutError } from './errors.js';
export type { BudgetSlot, ConnectionBudget } from './budget.js';
