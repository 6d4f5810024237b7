import { describeError, SluiceError } from '../../errors.js';

/** What the cache was doing with Redis when it failed. */
export type QueryCacheOperation = 'read' | 'store' | 'invalidate';

/**
 * A Redis failure of the query cache, reported to `onError` (never thrown to a reader or a
 * writer: a read then goes to the database, a write's invalidation is retried).
 * `QUERY_CACHE_REDIS_FAILED` (Redis answered with an error, or the connection failed;
 * the error is the `cause`) or `QUERY_CACHE_REDIS_TIMEOUT` (no answer within `redisTimeoutMs`).
 */
export class QueryCacheError extends SluiceError {
  readonly operation: QueryCacheOperation;
  /** The tables concerned: those whose invalidation failed (it is retried), or those read. */
  readonly tables: readonly string[];

  constructor(operation: QueryCacheOperation, tables: readonly string[], failure: { readonly timeoutMs: number } | { readonly cause: unknown }) {
    const what = operation === 'invalidate' ? `invalidating ${tables.join(', ')}` : operation === 'store' ? 'storing a result' : 'reading the cache';
    if ('timeoutMs' in failure) {
      super(
        'QUERY_CACHE_REDIS_TIMEOUT',
        `Redis did not answer within ${Math.ceil(failure.timeoutMs)} ms while ${what}` +
          (operation === 'invalidate' ? ': retried in the background; reads of these tables skip the cache meanwhile.' : '.'),
      );
    } else {
      super(
        'QUERY_CACHE_REDIS_FAILED',
        `Redis failed (${describeError(failure.cause)}) while ${what}` +
          (operation === 'invalidate' ? ': retried in the background; reads of these tables skip the cache meanwhile.' : '.'),
        { cause: failure.cause },
      );
    }
    this.operation = operation;
    this.tables = tables;
  }
}
