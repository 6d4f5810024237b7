/**
 * The query cache as its users see it (made by `createQueryCache`, create-query-cache.ts).
 * Nothing here names ioredis: model code and 'sluice' types refer to these without it.
 */
import type { CompiledQuery, RawBuilder } from 'kysely';
import type { Database } from '../connect.js';

/** Per call. */
export interface CachedQueryOptions {
  /** How long this result is kept. Default: the cache's `ttlMs`. */
  readonly ttlMs?: number;
  /**
   * The tables the result depends on, when sluice cannot tell them all from the query: a
   * raw `sql` query or fragment that reads tables, a view, a function that reads tables.
   * Added to the tables the query names. `[]` for a query that depends on no table (then
   * only the TTL ends its entries).
   */
  readonly tables?: readonly string[];
}

/** A query the cache can run: a Kysely SELECT builder (`db.selectFrom(...)`), or a `sql` query (with `tables`). */
export type CacheableQuery<O> = { compile(): CompiledQuery<unknown>; execute(): Promise<O[]> } | RawBuilder<O>;

/** Counters since the cache was made. */
export interface QueryCacheStats {
  /** Results read from Redis. */
  readonly hits: number;
  /** Results not in Redis: the query ran on the database (once per key however many callers asked at once). */
  readonly misses: number;
  /** Callers that waited for the same query already running for another (single flight) rather than run it again. */
  readonly singleFlightJoins: number;
  /**
   * Reads that went to the database without asking Redis: inside a transaction, of a table
   * a transaction of this process is writing or whose invalidation has not reached Redis,
   * while Redis is failing or out of time, or after `close()`.
   */
  readonly bypassed: number;
  /** Results read from the database but not stored: values the cache cannot write exactly (see README), or rows read inside a transaction. */
  readonly notStored: number;
  /** Redis failures and timeouts (each also given to `onError`). */
  readonly errors: number;
}

export interface QueryCache<DB> {
  /** The database whose queries this cache answers and whose writes invalidate it. */
  readonly database: Database<DB>;
  /**
   * Runs a SELECT through the cache: the stored result if there is one for its SQL, its
   * parameters and the current versions of its tables, else the query on the database
   * (stored for `ttlMs`). The query runs where it was built (a transaction's builder in
   * the transaction); inside a transaction the cache is not used. A repository's
   * `selectFrom()` builder gives instances of its model, hit or miss (its rows are stored).
   */
  execute<O>(query: CacheableQuery<O>, options?: CachedQueryOptions): Promise<O[]>;
  /** The first row `execute` gives, or `undefined`. */
  executeTakeFirst<O>(query: CacheableQuery<O>, options?: CachedQueryOptions): Promise<O | undefined>;
  /**
   * Invalidates every result that depends on `tables`: for writes sluice does not see (raw
   * `sql` writes, another application, triggers, ON DELETE CASCADE). Never rejects: a Redis
   * failure is given to `onError` and retried in the background (reads of the tables skip
   * the cache in this process meanwhile).
   */
  invalidate(tables: readonly string[]): Promise<void>;
  stats(): QueryCacheStats;
  /**
   * Stops listening to the database's writes and retrying invalidations; reads then skip
   * the cache. Does not close the Redis client.
   */
  close(): void;
}

/**
 * A query cache of any database, as model reads take it: a model's database type is often
 * a part of the database's, which `QueryCache<DB>` (invariant in `DB`) would refuse. That it
 * is the repository's own database is checked when it is used.
 */
export type AnyQueryCache = Omit<QueryCache<unknown>, 'database'> & { readonly database: object };
