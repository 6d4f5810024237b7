/**
 * `sluice/redis`: what sluice does with Redis. A separate entry, so that `sluice` itself
 * never loads `ioredis` (an optional peer dependency: install it to use this entry).
 */
export {
  BudgetUnavailableError,
  redisConnectionBudget,
  type BudgetUnavailablePolicy,
  type RedisConnectionBudget,
  type RedisConnectionBudgetOptions,
  type RedisConnectionBudgetStats,
} from './drivers/redis/redis-connection-budget.js';
export { createQueryCache, QueryCacheError, type QueryCacheOperation, type QueryCacheOptions } from './orm/cache/index.js';
export {
  connectRedis,
  type RedisClient,
  type RedisConnectOptions,
  type RedisPoolOptions,
  type RedisTransactionOptions,
} from './orm/redis-client.js';
export type { RedisArgument, RedisCommand, RedisSession, StreamEntry, StreamRead, XreadBlockOptions } from './orm/redis-session.js';
export { RedisCommandError, RedisTransactionConflictError } from './drivers/redis/redis-errors.js';
export type { RedisConnection } from './drivers/redis/redis-connection.js';
