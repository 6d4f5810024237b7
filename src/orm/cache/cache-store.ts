/**
 * The query cache's side of Redis: table versions and entries, every call bounded in time.
 *
 * Keys (under the cache's prefix, and under the ioredis client's own `keyPrefix`, if any):
 * - `<prefix>:v:<table>`: the table's version, bumped (INCR) by every write to it. No TTL.
 * - `<prefix>:q:<hash>:<v1>.<v2>...`: a result, filed under the versions its tables had
 *   when it was read (PX ttl). A write moves a version on: entries of the old one are never
 *   asked for again, and expire.
 *
 * A version key that does not exist yet (or was lost: an eviction, a restart without
 * persistence) starts at Redis's clock in microseconds, not at 0: a lost version must never
 * come back to a value under which old entries may still live.
 */
import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import { QueryCacheError } from './cache-errors.js';

/** A version key that does not exist is set to `now` (TIME, in microseconds). KEYS: version keys. */
const NOW_LUA = `
local now = nil
local function init(key)
  if now == nil then
    local t = redis.call('TIME')
    now = t[1] .. string.format('%06d', tonumber(t[2]))
  end
  redis.call('SET', key, now)
  return now
end
`;

/**
 * One round trip for a read: the versions of the query's tables (KEYS), and the entry filed
 * under them (ARGV[1]: the entry key without its versions). Returns `{ versions, entry or nil }`.
 */
const READ_SCRIPT = `${NOW_LUA}
local versions = {}
for i = 1, #KEYS do
  versions[i] = redis.call('GET', KEYS[i]) or init(KEYS[i])
end
local joined = table.concat(versions, '.')
return { joined, redis.call('GET', ARGV[1] .. ':' .. joined) }
`;

/** Moves the versions of KEYS on. */
const BUMP_SCRIPT = `${NOW_LUA}
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then init(KEYS[i]) end
  redis.call('INCR', KEYS[i])
end
return #KEYS
`;

interface Script {
  readonly source: string;
  readonly sha: string;
}
const script = (source: string): Script => ({ source, sha: createHash('sha1').update(source).digest('hex') });
const READ = script(READ_SCRIPT);
const BUMP = script(BUMP_SCRIPT);

/**
 * After a failure or a timeout, Redis is left alone this long: reads go straight to the
 * database instead of each waiting out a timeout (and piling commands up in the client's
 * queue) while Redis is down or stalled.
 */
const COOL_DOWN_MS = 1_000;

/** What a read found. */
export interface ReadResult {
  /** The versions of the query's tables, as the entry key has them. */
  readonly versions: string;
  /** The stored entry, or `null` (a miss). */
  readonly entry: string | null;
}

/** The outcome of one bounded call: its value, or why there is none. */
type Outcome<T> =
  | { readonly ok: true; readonly value: T }
  | { readonly ok: false; readonly failure: { readonly timeoutMs: number } | { readonly cause: unknown } | { readonly aborted: true } };

export class CacheStore {
  readonly #redis: Redis;
  readonly #prefix: string;
  /** The prefix as Redis sees it, for keys named inside a script (which ioredis does not prefix). */
  readonly #serverPrefix: string;
  #downUntil = 0;

  constructor(redis: Redis, prefix: string) {
    this.#redis = redis;
    this.#prefix = prefix;
    const keyPrefix = (redis.options as { readonly keyPrefix?: string } | undefined)?.keyPrefix ?? '';
    this.#serverPrefix = keyPrefix + prefix;
  }

  /**
   * Whether Redis is worth asking now: not within a cool-down, and the client not
   * reconnecting or closed (its commands would only queue up).
   */
  get available(): boolean {
    const status = this.#redis.status;
    if (status === 'reconnecting' || status === 'close' || status === 'end') return false;
    return this.#downUntil === 0 || performance.now() >= this.#downUntil;
  }

  versionKey(table: string): string {
    return `${this.#prefix}:v:${table}`;
  }

  /** The versions of `tables` and the entry of `hash` under them. Rejects with a QueryCacheError; resolves `undefined` when `signal` aborts first. */
  async read(tables: readonly string[], hash: string, timeoutMs: number, signal: AbortSignal | undefined): Promise<ReadResult | undefined> {
    const outcome = await this.#bounded(
      () => this.#eval(READ, tables.map((table) => this.versionKey(table)), [`${this.#serverPrefix}:q:${hash}`]),
      timeoutMs,
      signal,
    );
    if (!outcome.ok) {
      if ('aborted' in outcome.failure) return undefined;
      throw new QueryCacheError('read', tables, outcome.failure);
    }
    const [versions, entry] = outcome.value as [string, string | null];
    return { versions, entry };
  }

  /** Files `payload` under `hash` and `versions` for `ttlMs`. Rejects with a QueryCacheError. */
  async store(tables: readonly string[], hash: string, versions: string, payload: string, ttlMs: number, timeoutMs: number): Promise<void> {
    const outcome = await this.#bounded(() => this.#redis.set(`${this.#prefix}:q:${hash}:${versions}`, payload, 'PX', ttlMs), timeoutMs, undefined);
    if (!outcome.ok && !('aborted' in outcome.failure)) throw new QueryCacheError('store', tables, outcome.failure);
  }

  /** Moves the versions of `tables` on. Rejects with a QueryCacheError. */
  async bump(tables: readonly string[], timeoutMs: number): Promise<void> {
    const outcome = await this.#bounded(() => this.#eval(BUMP, tables.map((table) => this.versionKey(table)), []), timeoutMs, undefined);
    if (!outcome.ok && !('aborted' in outcome.failure)) throw new QueryCacheError('invalidate', tables, outcome.failure);
  }

  /** EVALSHA, and EVAL once when the server does not have the script (a restart, SCRIPT FLUSH). */
  async #eval(run: Script, keys: readonly string[], args: readonly string[]): Promise<unknown> {
    try {
      return await this.#redis.evalsha(run.sha, keys.length, ...keys, ...args);
    } catch (error) {
      if (!(error instanceof Error && error.message.startsWith('NOSCRIPT'))) throw error;
      return this.#redis.eval(run.source, keys.length, ...keys, ...args);
    }
  }

  /**
   * Runs `call`, waiting at most `timeoutMs` (or until `signal` aborts). A call given up on
   * is left to finish on its own, its rejection caught. A failure or a timeout starts the cool-down.
   */
  async #bounded<T>(call: () => Promise<T>, timeoutMs: number, signal: AbortSignal | undefined): Promise<Outcome<T>> {
    let running: Promise<Outcome<T>>;
    try {
      running = call().then(
        (value): Outcome<T> => ({ ok: true, value }),
        (cause: unknown): Outcome<T> => ({ ok: false, failure: { cause } }),
      );
    } catch (cause) {
      running = Promise.resolve({ ok: false, failure: { cause } });
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    let onAbort: (() => void) | undefined;
    const outcome = await Promise.race([
      running,
      new Promise<Outcome<T>>((resolve) => {
        timer = setTimeout(() => resolve({ ok: false, failure: { timeoutMs } }), timeoutMs);
        if (signal !== undefined) {
          onAbort = () => resolve({ ok: false, failure: { aborted: true } });
          if (signal.aborted) onAbort();
          else signal.addEventListener('abort', onAbort, { once: true });
        }
      }),
    ]);
    clearTimeout(timer);
    if (onAbort !== undefined) signal?.removeEventListener('abort', onAbort);
    if (outcome.ok) this.#downUntil = 0;
    else if (!('aborted' in outcome.failure)) this.#downUntil = performance.now() + COOL_DOWN_MS;
    return outcome;
  }
}
