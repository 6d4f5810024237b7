export { QueryCacheError, type QueryCacheOperation } from './cache-errors.js';
export {
  createQueryCache,
  type CacheableQuery,
  type CachedQueryOptions,
  type QueryCache,
  type QueryCacheOptions,
  type QueryCacheStats,
} from './query-cache.js';
