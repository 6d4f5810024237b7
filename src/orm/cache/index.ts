export { QueryCacheError, type QueryCacheOperation } from './cache-errors.js';
export { createQueryCache, type QueryCacheOptions } from './create-query-cache.js';
export type { AnyQueryCache, CacheableQuery, CachedQueryOptions, QueryCache, QueryCacheStats } from './query-cache.js';
