import { AsyncLocalStorage } from 'node:async_hooks';
import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { RawBuilder } from 'kysely';
import { InvalidOptionError } from '../../errors.js';
import { checkMilliseconds } from '../../pool/options.js';
import { cacheIdentity, currentKysely, type Database, observeWrites } from '../connect.js';
import { currentDeadline, type Deadline, statementSignal } from '../deadline-scope.js';
import { hydratedModel, rowsOf } from '../model/hydrate-plugin.js';
import { hydrateAll } from '../model/model.js';
import type { WriteObserver } from '../write-observers.js';
import { decodeValue, encodeValue } from './cache-codec.js';
import { QueryCacheError } from './cache-errors.js';
import { CacheStore } from './cache-store.js';
import type { CacheableQuery, CachedQueryOptions, QueryCache } from './query-cache.js';
import { readTables, tableTag } from './query-tables.js';
import { SingleFlight } from './single-flight.js';

export interface QueryCacheOptions {
  /**
   * The ioredis client entries and table versions are kept in. Yours: the cache never
   * connects or closes it. Its `keyPrefix`, if any, applies. Not a Redis Cluster (a read
   * touches several keys in one script), unless `prefix` holds a hash tag (`{app}:cache`).
   */
  readonly redis: Redis;
  /** The namespace of the cache's keys. Default `'sluice:cache'`. Caches that share a prefix (and a database) share entries. */
  readonly prefix?: string;
  /** How long a result is kept, unless the call says otherwise. Default 60 s. */
  readonly ttlMs?: number;
  /**
   * The longest a read waits for Redis (inside `withDeadline`, no later than the deadline)
   * before going to the database instead, and a write for its invalidation before it is
   * retried in the background. Default 250 ms.
   */
  readonly redisTimeoutMs?: number;
  /**
   * Told of every Redis failure: reads and writes never fail because of Redis (a read goes
   * to the database, an invalidation is retried), so this is where outages are heard of.
   * Default: none (counted in `stats().errors` only).
   */
  readonly onError?: (error: QueryCacheError) => void;
}

const DEFAULT_PREFIX = 'sluice:cache';
const DEFAULT_TTL_MS = 60_000;
const DEFAULT_REDIS_TIMEOUT_MS = 250;
/** Retries of failed invalidations: the first after this, doubling... */
const RETRY_FIRST_MS = 100;
/** ...up to this, for as long as the cache is open. */
const RETRY_MAX_MS = 5_000;
/** Changes when the key or entry format does: old entries are then never read. */
const FORMAT = 'v2';

/** A cached read running its query: told by the connection when the query ran in a transaction. */
interface ReadContext {
  inTransaction: boolean;
}
const reading = new AsyncLocalStorage<ReadContext>();

/** What a flight (one database query shared by concurrent misses) ended with. */
type FlightOutcome =
  | {
      readonly ok: true;
      readonly rows: unknown[];
      /** The rows as stored, for those who joined (each decodes its own copy); undefined when they must run the query themselves. */
      readonly payload: string | undefined;
    }
  | {
      readonly ok: false;
      readonly error: unknown;
      /** The failure was the leader's own deadline or abort, not the query's: joiners run it themselves. */
      readonly leaderOnly: boolean;
    };

function checkPrefix(prefix: string | undefined): string {
  if (prefix === undefined) return DEFAULT_PREFIX;
  if (typeof prefix !== 'string' || prefix.length === 0 || prefix.length > 200 || /[\s\u0000-\u001f\u007f]/.test(prefix)) {
    throw new InvalidOptionError('prefix', 'expected 1 to 200 characters, with no spaces or control characters.');
  }
  return prefix;
}

function checkTables(option: string, tables: readonly string[] | undefined): readonly string[] | undefined {
  if (tables === undefined) return undefined;
  if (!Array.isArray(tables) || !tables.every((table) => typeof table === 'string' && table.length > 0)) {
    throw new InvalidOptionError(option, 'expected an array of table names.');
  }
  return tables.map(tableTag);
}

function isRawBuilder<O>(query: CacheableQuery<O>): query is RawBuilder<O> {
  return (query as { readonly isRawBuilder?: unknown }).isRawBuilder === true;
}

/** Whether `deadline` (the scope's when the query ran) has passed or been aborted. */
function passed(deadline: Deadline | undefined): boolean {
  return deadline !== undefined && (deadline.signal?.aborted === true || performance.now() >= deadline.at);
}

/** Waits for `flight`, but no longer than the caller's own deadline (or signal). */
async function withinDeadline<T>(flight: Promise<T>): Promise<T> {
  const statement = statementSignal(currentDeadline());
  const signal = statement.signal;
  if (signal === undefined) return flight;
  let onAbort: (() => void) | undefined;
  try {
    return await new Promise<T>((resolve, reject) => {
      if (signal.aborted) return reject(signal.reason);
      onAbort = () => reject(signal.reason);
      signal.addEventListener('abort', onAbort, { once: true });
      flight.then(resolve, reject);
    });
  } finally {
    if (onAbort !== undefined) signal.removeEventListener('abort', onAbort);
    statement.dispose();
  }
}

/**
 * A query cache in Redis for `database`: opt-in per query (`cache.execute(query)`, or a
 * model query's `.cached(cache)`), invalidated by the writes made through `database`.
 * See the README, "Query cache", for what it can and cannot see.
 */
export function createQueryCache<DB>(database: Database<DB>, options: QueryCacheOptions): QueryCache<DB> {
  if (options === null || typeof options !== 'object' || options.redis === null || typeof options.redis !== 'object') {
    throw new InvalidOptionError('redis', 'expected an ioredis client.');
  }
  const prefix = checkPrefix(options.prefix);
  const defaultTtlMs = checkMilliseconds('ttlMs', options.ttlMs, DEFAULT_TTL_MS, { least: 1 });
  const redisTimeoutMs = checkMilliseconds('redisTimeoutMs', options.redisTimeoutMs, DEFAULT_REDIS_TIMEOUT_MS, { least: 1 });
  const onError = options.onError;
  if (onError !== undefined && typeof onError !== 'function') throw new InvalidOptionError('onError', 'expected a function.');
  const store = new CacheStore(options.redis, prefix);
  // In entry keys rather than `database.location`: the user and the URL's query string (a
  // role, a search_path) may change what a query returns. Table versions carry none of it:
  // a write must invalidate every database that may see the table.
  const identity = cacheIdentity(database);
  const flights = new SingleFlight<FlightOutcome>();
  const stats = { hits: 0, misses: 0, singleFlightJoins: 0, bypassed: 0, notStored: 0, errors: 0 };
  /** Tables a transaction of this process is writing: how many such transactions are open. */
  const pending = new Map<string, number>();
  /**
   * Tables whose invalidation has not reached Redis, each with a count of the writes that
   * made it so: a retry clears a table only if no write came after the retry began.
   */
  const dirty = new Map<string, number>();
  let retryTimer: ReturnType<typeof setTimeout> | undefined;
  let retryDelayMs = RETRY_FIRST_MS;
  let closed = false;

  const report = (error: QueryCacheError): void => {
    stats.errors++;
    if (onError === undefined) return;
    try {
      onError(error);
    } catch {
      // A failing error handler must not fail a read or a write.
    }
  };

  const markDirty = (tables: readonly string[]): void => {
    for (const table of tables) dirty.set(table, (dirty.get(table) ?? 0) + 1);
    scheduleRetry();
  };

  const scheduleRetry = (): void => {
    if (retryTimer !== undefined || closed || dirty.size === 0) return;
    retryTimer = setTimeout(() => {
      retryTimer = undefined;
      void retry();
    }, retryDelayMs);
    retryTimer.unref();
  };

  const retry = async (): Promise<void> => {
    const attempt = new Map(dirty);
    const tables = [...attempt.keys()];
    try {
      await store.bump(tables, redisTimeoutMs);
      for (const [table, count] of attempt) if (dirty.get(table) === count) dirty.delete(table);
      retryDelayMs = RETRY_FIRST_MS;
    } catch {
      // Reported when the outage began (the failed bump): not again at every retry.
      retryDelayMs = Math.min(2 * retryDelayMs, RETRY_MAX_MS);
    }
    scheduleRetry();
  };

  /** Moves the versions of `tables` on, within `timeoutMs`; on failure, marks them dirty (retried). Never rejects. */
  const bump = async (tables: readonly string[], timeoutMs: number): Promise<void> => {
    if (closed || tables.length === 0) return;
    if (timeoutMs <= 0 || !store.available) {
      markDirty(tables);
      return;
    }
    try {
      await store.bump(tables, timeoutMs);
    } catch (error) {
      markDirty(tables);
      report(error as QueryCacheError);
    }
  };

  const observer: WriteObserver = {
    written: (tables) => {
      // Within half of what is left of the caller's deadline too, as a read: a write inside
      // withDeadline does not spend its scope's time on a stalled Redis (the bump is then
      // retried in the background, and reads of the tables skip the cache meanwhile).
      const deadline = currentDeadline();
      const left = deadline === undefined ? Infinity : (deadline.at - performance.now()) / 2;
      return bump(tables, Math.min(redisTimeoutMs, left));
    },
    pending: (tables, delta) => {
      for (const table of tables) {
        const count = (pending.get(table) ?? 0) + delta;
        if (count > 0) pending.set(table, count);
        else pending.delete(table);
      }
    },
    readInTransaction: () => {
      const context = reading.getStore();
      if (context !== undefined) context.inTransaction = true;
    },
  };
  const unsubscribe = observeWrites(database, observer);

  const skips = (tables: readonly string[]): boolean => tables.some((table) => pending.has(table) || dirty.has(table));

  const execute = async <O>(query: CacheableQuery<O>, callOptions: CachedQueryOptions = {}): Promise<O[]> => {
    // Whole milliseconds: Redis refuses `PX 1500.5` (every store would fail, and each failure
    // would start the store's cool-down for every read of the process).
    const ttlMs = Math.ceil(checkMilliseconds('ttlMs', callOptions.ttlMs, defaultTtlMs, { least: 1 }));
    const declared = checkTables('tables', callOptions.tables);
    // Resolved now: a `sql` query joins the transaction it is made in, as models do.
    const kysely = currentKysely(database.db);
    const raw = isRawBuilder(query);
    const compiled = raw ? query.compile(kysely) : query.compile();
    const found = readTables(compiled.query);
    if (found.writes) {
      throw new InvalidOptionError('query', 'the query cache runs SELECTs only: this query writes (INSERT, UPDATE, DELETE or MERGE, maybe in a WITH).');
    }
    if (declared === undefined && (found.opaque || found.tables.length === 0)) {
      throw new InvalidOptionError(
        'tables',
        found.opaque
          ? 'this query has raw SQL that may read tables sluice cannot see: name the tables it reads ({ tables: [...] }) so that writes to them invalidate it.'
          : 'this query reads no table: pass { tables: [] } to cache it by its TTL alone, or name the tables it depends on.',
      );
    }
    const tables = declared === undefined ? found.tables : [...new Set([...found.tables, ...declared])].sort();
    const run = async (): Promise<O[]> => (raw ? (await query.execute(kysely)).rows : await query.execute());
    // A model builder (`users.selectFrom()`, marked by its HydratePlugin): its rows are
    // stored, as `users.query().cached()` stores them (same SQL, same entry), and instances
    // made from them at every read, so instanceof holds and each has its own snapshot.
    const model = raw ? undefined : hydratedModel(compiled.query);
    const runRows = model === undefined ? run : () => rowsOf(compiled.queryId, run);
    const finish = model === undefined ? (rows: unknown[]) => rows as O[] : (rows: unknown[]) => hydrateAll(model, rows as Array<Record<string, unknown>>) as O[];

    // Inside a transaction a result may be uncommitted, or an older snapshot: not shared, and
    // the transaction's own writes are not in the cache.
    if (closed || kysely.isTransaction || skips(tables) || !store.available) {
      stats.bypassed++;
      return run();
    }
    let hash: string;
    try {
      // The tables too: one SQL text cached with two different `tables` lists is two entries
      // (their versions may be equal strings: versions made in one script start equal).
      hash = createHash('sha1')
        .update(`${FORMAT}\u0000${identity}\u0000${tables.join('\u0000')}\u0000${compiled.sql}\u0000${encodeValue(compiled.parameters)}`)
        .digest('hex');
    } catch {
      // A parameter the codec cannot write (a class instance): no key for this query.
      stats.bypassed++;
      return run();
    }
    // Inside a deadline, Redis gets at most half of what is left: a stalled Redis must leave
    // the database the time to answer instead.
    const deadline = currentDeadline();
    const redisBudget = (): number => Math.min(redisTimeoutMs, deadline === undefined ? Infinity : (deadline.at - performance.now()) / 2);
    const timeoutMs = redisBudget();
    if (timeoutMs <= 0) {
      stats.bypassed++;
      return run();
    }
    let read;
    try {
      read = await store.read(tables, hash, timeoutMs, deadline?.signal);
    } catch (error) {
      report(error as QueryCacheError);
      stats.bypassed++;
      return run();
    }
    if (read === undefined) {
      // The caller's signal aborted: the query fails as it would have without the cache.
      stats.bypassed++;
      return run();
    }
    if (read.entry !== null) {
      try {
        const rows = finish(decodeValue(read.entry) as unknown[]);
        stats.hits++;
        return rows;
      } catch {
        // Not written by this version of sluice: read again from the database, stored over it.
      }
    }
    const flightKey = `${hash}:${read.versions}`;
    const inFlight = flights.joinable(flightKey);
    if (inFlight !== undefined) {
      stats.singleFlightJoins++;
      const outcome = await withinDeadline(inFlight);
      if (outcome.ok) return outcome.payload === undefined ? run() : finish(decodeValue(outcome.payload) as unknown[]);
      if (outcome.leaderOnly) return run();
      throw outcome.error;
    }
    stats.misses++;
    const outcome = await flights.run(flightKey, async (): Promise<FlightOutcome> => {
      const context: ReadContext = { inTransaction: false };
      let rows: unknown[];
      try {
        rows = await reading.run(context, runRows);
      } catch (error) {
        return { ok: false, error, leaderOnly: passed(deadline) };
      }
      // Rows read on a transaction's connection (a builder of a Kysely transaction), or while
      // a table became one a transaction is writing or whose invalidation failed: not stored.
      if (context.inTransaction || skips(tables) || !Array.isArray(rows)) {
        stats.notStored++;
        return { ok: true, rows, payload: undefined };
      }
      let payload: string;
      try {
        payload = encodeValue(rows);
      } catch {
        stats.notStored++;
        return { ok: true, rows, payload: undefined };
      }
      // The caller waits for the SET: within its deadline too (half of what is left), or a
      // stalled Redis would hold rows already read for up to redisTimeoutMs past it.
      const storeTimeoutMs = redisBudget();
      if (storeTimeoutMs > 0) {
        try {
          await store.store(tables, hash, read.versions, payload, ttlMs, storeTimeoutMs);
        } catch (error) {
          report(error as QueryCacheError);
        }
      }
      return { ok: true, rows, payload };
    });
    if (!outcome.ok) throw outcome.error;
    return finish(outcome.rows);
  };

  return {
    database,
    execute,
    executeTakeFirst: async (query, callOptions) => (await execute(query, callOptions))[0],
    invalidate: async (tables) => {
      const checked = checkTables('tables', tables) ?? [];
      await bump([...new Set(checked)], redisTimeoutMs);
    },
    stats: () => ({ ...stats }),
    close: () => {
      if (closed) return;
      closed = true;
      unsubscribe();
      clearTimeout(retryTimer);
      retryTimer = undefined;
    },
  };
}
