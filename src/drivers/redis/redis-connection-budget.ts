import { hostname } from 'node:os';
import type { ConnectionOptions as TlsOptions } from 'node:tls';
import { Redis } from 'ioredis';
import { describeError, InvalidOptionError, SluiceError } from '../../errors.js';
import type { BudgetSlot, ConnectionBudget } from '../../pool/budget.js';
import { checkMilliseconds } from '../../pool/options.js';
import { ConnectionError } from '../errors.js';
import { BUDGET_SCRIPT } from './budget-script.js';
import { parseRedisUrl } from './redis-url.js';

/** What to do while Redis cannot be reached. */
export type BudgetUnavailablePolicy =
  /** Open no new connection (the pool's callers time out, with this as the cause); keep the open ones while the lease lasts. */
  | 'fail-closed'
  /** Allow this process up to `localLimit` connections on its own, until Redis answers again. */
  | { readonly localLimit: number };

export interface RedisConnectionBudgetOptions {
  /** The Redis server holding the budget: `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS. */
  readonly url: string;
  /**
   * The budget's name: every pool, in any process, given the same `key` (on the same Redis)
   * shares one `limit`. Keys made from it are `{key}:holders`, `{key}:leases`, `{key}:waiting`.
   */
  readonly key: string;
  /** How many connections all the pools sharing `key` may hold together. Every one must pass the same. */
  readonly limit: number;
  /**
   * How long a process's slots stay counted after its last word: a process that dies
   * without closing its pool frees its share this long after. Live processes renew well
   * before (every `renewIntervalMs`). Default 15 s: rides out a long GC pause or a Redis
   * failover; a crash costs that long at most.
   */
  readonly leaseMs?: number;
  /** How often the lease is renewed (and the budget's fair shares re-read). Default the lesser of 1 s and `leaseMs / 5`. */
  readonly renewIntervalMs?: number;
  /** The longest wait for one Redis round trip; past it Redis counts as unavailable. Default 1 s. */
  readonly redisTimeoutMs?: number;
  /** While Redis cannot be reached. Default `'fail-closed'` (see `BudgetUnavailablePolicy`). */
  readonly whenUnavailable?: BudgetUnavailablePolicy;
  /** TLS settings for the Redis connection, as `node:tls` takes them (a `rediss://` URL turns TLS on too). */
  readonly tls?: TlsOptions;
}

/** A snapshot of a budget, for metrics and debugging. */
export interface RedisConnectionBudgetStats {
  /** Slots this process holds and keeps (not being given back). */
  readonly held: number;
  /** Creates of this process waiting for a slot. */
  readonly waiting: number;
  /** The fair share of one process at the last answer from Redis. */
  readonly share: number;
  /** Whether, at the last answer, another process waited below its fair share (or with nothing). */
  readonly contended: boolean;
  /** False while Redis cannot be reached. */
  readonly available: boolean;
  /** Slots taken back from this process (its lease had expired and the budget was full meanwhile). */
  readonly revoked: number;
}

/** A connection budget kept in Redis, shared by every process whose pool names the same key. */
export interface RedisConnectionBudget extends ConnectionBudget {
  stats(): RedisConnectionBudgetStats;
}

/**
 * The budget could not be consulted (Redis down, unreachable or too slow) and its policy is
 * `'fail-closed'`: no connection is opened until it answers. The Redis error is the `cause`.
 */
export class BudgetUnavailableError extends SluiceError {
  constructor(message: string, options: { readonly cause: unknown }) {
    super('BUDGET_UNAVAILABLE', message, options);
  }
}

/**
 * `held`: counted, kept. `yielding`: counted, given back once its connection is idle (another
 * process waits below its share). `revoked`: no longer ours in Redis (or about not to be:
 * our lease ran out), given back once idle, even below the pool's `min`. Every live slot
 * is reported to Redis until its connection is closed: an open connection is never left
 * uncounted where Redis can still count it.
 */
type SlotState = 'held' | 'yielding' | 'revoked' | 'released';

class Slot implements BudgetSlot {
  state: SlotState = 'held';
  readonly grantedAt = performance.now();
  readonly #budget: Budget;

  constructor(budget: Budget) {
    this.#budget = budget;
  }

  release(): void {
    this.#budget.release(this);
  }
}

interface PendingTake {
  readonly resolve: (slot: Slot) => void;
  readonly reject: (error: unknown) => void;
  readonly signal: AbortSignal;
  readonly onAbort: () => void;
}

/** What the script answers: see budget-script.ts. */
type Answer = [mine: number, share: number, starved: number, participants: number, hungry: number];

interface BudgetRedis extends Redis {
  sluiceBudget(holders: string, leases: string, waiting: string, ...args: Array<string | number>): Promise<Answer>;
}

const SECOND = 1_000;
/** A create waiting for a slot asks again after this, doubling up to POLL_MAX_MS. */
const POLL_FIRST_MS = 20;
const POLL_MAX_MS = 250;

/**
 * A connection budget in Redis: give it to a pool as `budget`, and the pools of every
 * process that names the same `key` together hold at most `limit` connections.
 *
 * ```ts
 * const database = connect(process.env.DATABASE_URL, {
 *   pool: { max: 10, budget: redisConnectionBudget({ url: process.env.REDIS_URL, key: 'orders-db', limit: 40 }) },
 * });
 * ```
 *
 * Each process holds a lease on its slots, renewed every `renewIntervalMs` and expiring
 * `leaseMs` after its last renewal. Slots are shared fairly: while a process waits with
 * fewer than its share (`limit` / processes), the others give back idle connections above
 * their share, and get no new slot. Redis unreachable: see `whenUnavailable`. One budget
 * serves one pool, which closes it.
 */
export function redisConnectionBudget(options: RedisConnectionBudgetOptions): RedisConnectionBudget {
  return new Budget(options);
}

class Budget implements RedisConnectionBudget {
  readonly description: string;
  readonly #redis: BudgetRedis;
  readonly #keys: readonly [string, string, string];
  readonly #holder = `${hostname()}:${process.pid}:${Math.random().toString(36).slice(2, 10)}`;
  readonly #limit: number;
  readonly #leaseMs: number;
  readonly #renewMs: number;
  readonly #timeoutMs: number;
  readonly #localLimit: number | undefined;
  /** Every slot whose connection is not closed yet, whatever its state. */
  readonly #slots = new Set<Slot>();
  readonly #pending: PendingTake[] = [];
  readonly #renewTimer: ReturnType<typeof setInterval>;
  /** Fires just before our lease would expire in Redis, unless a renewal succeeded meanwhile. */
  #leaseTimer: ReturnType<typeof setTimeout> | undefined;
  #pollTimer: ReturnType<typeof setTimeout> | undefined;
  #pollDelayMs = POLL_FIRST_MS;
  #recheck: (() => void) | undefined;
  #attached = false;
  #closed = false;

  #share: number;
  #contended = false;
  /** Another process waits holding nothing while more processes than `limit` want slots. */
  #hungry = false;
  #revokedTotal = 0;
  /** The one sync in flight: calls are serialized, so each states the holder's count as it stands. */
  #syncing: Promise<void> | undefined;
  #syncAgain = false;
  #unavailable: unknown = undefined;
  /** The last error ioredis reported: the cause when a call cannot be made. */
  #lastRedisError: unknown = undefined;
  /** Redis counts nothing of ours: no need to renew. */
  #idleInRedis = true;
  /** The URL names a database Redis does not have: nothing will work until it is fixed. */
  #unknownDatabase: ConnectionError | undefined;

  constructor(options: RedisConnectionBudgetOptions) {
    if (options === null || typeof options !== 'object') {
      throw new InvalidOptionError('options', 'expected { url, key, limit }.');
    }
    const { url, key, limit } = options;
    if (typeof url !== 'string') throw new InvalidOptionError('url', 'expected a redis:// or rediss:// URL.');
    // Read here, never by ioredis: its URL errors quote the URL, password and all.
    const target = parseRedisUrl(url);
    if (typeof key !== 'string' || key === '' || key.length > 200 || /[{}\s]/.test(key)) {
      throw new InvalidOptionError('key', 'expected a non-empty name of at most 200 characters, without braces or spaces.');
    }
    if (!Number.isSafeInteger(limit) || limit < 1) {
      throw new InvalidOptionError('limit', 'expected a whole number of connections, 1 or more.');
    }
    this.#limit = limit;
    this.#share = limit;
    this.#leaseMs = checkMilliseconds('leaseMs', options.leaseMs, 15 * SECOND, { least: 100 });
    this.#renewMs = checkMilliseconds('renewIntervalMs', options.renewIntervalMs, Math.min(SECOND, Math.floor(this.#leaseMs / 5)), {
      least: 10,
    });
    if (this.#renewMs * 2 > this.#leaseMs) {
      throw new InvalidOptionError('renewIntervalMs', 'must be at most half of leaseMs, so that a lease is renewed before it expires.');
    }
    this.#timeoutMs = checkMilliseconds('redisTimeoutMs', options.redisTimeoutMs, SECOND, { least: 1 });
    const policy = options.whenUnavailable ?? 'fail-closed';
    if (policy === 'fail-closed') this.#localLimit = undefined;
    else if (policy !== null && typeof policy === 'object' && Number.isSafeInteger(policy.localLimit) && policy.localLimit >= 0 && policy.localLimit <= limit) {
      this.#localLimit = policy.localLimit;
    } else {
      throw new InvalidOptionError('whenUnavailable', `expected 'fail-closed' or { localLimit } with localLimit from 0 to limit (${limit}).`);
    }
    this.description = `the Redis connection budget "${key}" (limit ${limit})`;
    this.#keys = [`{${key}}:holders`, `{${key}}:leases`, `{${key}}:waiting`];

    this.#redis = new Redis({
      host: target.host,
      port: target.port,
      db: target.db,
      ...(target.username !== undefined ? { username: target.username } : {}),
      ...(target.password !== undefined ? { password: target.password } : {}),
      ...(target.tls || options.tls !== undefined ? { tls: options.tls ?? {} } : {}),
      lazyConnect: true,
      // A command while disconnected fails at once instead of queueing: the policy decides.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: this.#timeoutMs,
      connectTimeout: this.#timeoutMs,
      retryStrategy: (times) => Math.min(50 * 2 ** times, 2 * SECOND),
      connectionName: 'sluice-budget',
    }) as BudgetRedis;
    // Reported through the failing calls (as their cause, and the pool's `error` events).
    this.#redis.on('error', (error: unknown) => {
      this.#lastRedisError = error;
      // ioredis reports a failed SELECT only here, and goes on in database 0.
      if (error instanceof Error && /DB index is out of range/i.test(error.message)) {
        this.#unknownDatabase ??= new ConnectionError(
          'UNKNOWN_DATABASE',
          `Redis has no database ${target.db} (the budget's URL names it): fix the URL.`,
          { cause: error },
        );
      }
    });
    this.#redis.defineCommand('sluiceBudget', { numberOfKeys: 3, lua: BUDGET_SCRIPT });
    this.#renewTimer = setInterval(() => this.#renew(), this.#renewMs);
    this.#renewTimer.unref();
  }

  attach(recheck: () => void): void {
    if (this.#attached) {
      throw new InvalidOptionError('budget', 'this budget already serves a pool: make one budget per pool (they may share a key).');
    }
    this.#attached = true;
    this.#recheck = recheck;
  }

  take(signal: AbortSignal): Promise<BudgetSlot> {
    if (this.#closed) return Promise.reject(new SluiceError('BUDGET_CLOSED', `${this.description} is closed.`));
    if (signal.aborted) return Promise.reject(signal.reason);
    return new Promise<BudgetSlot>((resolve, reject) => {
      const take: PendingTake = {
        resolve,
        reject,
        signal,
        onAbort: () => {
          const index = this.#pending.indexOf(take);
          if (index !== -1) this.#pending.splice(index, 1);
          reject(signal.reason);
        },
      };
      signal.addEventListener('abort', take.onAbort, { once: true });
      this.#pending.push(take);
      this.#pollDelayMs = POLL_FIRST_MS;
      this.#sync();
    });
  }

  keep(slot: BudgetSlot, required: boolean): boolean {
    const own = slot as Slot;
    if (own.state === 'revoked' || own.state === 'yielding') return false;
    if (own.state !== 'held' || required) return true;
    const kept = this.#kept();
    // Above our share while another process waits below its own: give this one back.
    const aboveShare = this.#contended && kept > this.#share;
    // More processes want slots than there are: they take turns, each slot held at least a
    // renewal interval (so a turn is worth its connect).
    const turnOver = this.#hungry && kept >= 1 && performance.now() - own.grantedAt >= this.#renewMs;
    if (!aboveShare && !turnOver) return true;
    own.state = 'yielding';
    return false;
  }

  /** Called by a slot: its connection is closed. */
  release(slot: Slot): void {
    if (slot.state === 'released') return;
    slot.state = 'released';
    this.#slots.delete(slot);
    // At once: another process may be waiting for it.
    this.#sync();
  }

  stats(): RedisConnectionBudgetStats {
    return {
      held: this.#kept(),
      waiting: this.#pending.length,
      share: this.#share,
      contended: this.#contended || this.#hungry,
      available: this.#unavailable === undefined,
      revoked: this.#revokedTotal,
    };
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#renewTimer);
    clearTimeout(this.#pollTimer);
    clearTimeout(this.#leaseTimer);
    const closed = new SluiceError('BUDGET_CLOSED', `${this.description} closed.`);
    for (const take of this.#pending.splice(0)) this.#settle(take, closed);
    await this.#syncing;
    // Whatever is still held is given back: the pool has destroyed (or given up on) it all.
    for (const slot of this.#slots) slot.state = 'released';
    this.#slots.clear();
    if (!this.#idleInRedis) await this.#call(0, 0).catch(() => {});
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await Promise.race([this.#redis.quit(), new Promise((resolve) => (timer = setTimeout(resolve, this.#timeoutMs)))]);
    } catch {
      // Already disconnected.
    } finally {
      clearTimeout(timer);
    }
    this.#redis.disconnect();
  }

  // --- talking to Redis -------------------------------------------------------------------

  /** Slots this process keeps: neither yielding nor revoked. */
  #kept(): number {
    let kept = 0;
    for (const slot of this.#slots) if (slot.state === 'held') kept++;
    return kept;
  }

  #renew(): void {
    if (this.#idleInRedis && this.#slots.size === 0 && this.#pending.length === 0) return;
    this.#sync();
  }

  /** Runs a sync now, or right after the one in flight. */
  #sync(): void {
    if (this.#closed) return;
    if (this.#syncing !== undefined) {
      this.#syncAgain = true;
      return;
    }
    this.#syncing = (async () => {
      do {
        this.#syncAgain = false;
        await this.#syncOnce();
      } while (this.#syncAgain && !this.#closed);
      this.#syncing = undefined;
    })();
  }

  async #syncOnce(): Promise<void> {
    // Every live slot, revoked ones too: their connections are still open.
    const sentHeld = this.#slots.size;
    const want = this.#pending.length;
    // Redis runs the script after this, so our lease (if renewed) lasts at least until sentAt + leaseMs.
    const sentAt = performance.now();
    let answer: Answer;
    try {
      answer = await this.#call(sentHeld, want);
    } catch (error) {
      // The call may still have run in Redis (a grant whose reply was lost): renew, so that
      // a later answer puts the count right.
      if (sentHeld > 0 || want > 0) this.#idleInRedis = false;
      this.#onUnavailable(error);
      return;
    }
    this.#unavailable = undefined;
    const [mine, share, contended, participants, hungry] = answer;
    this.#idleInRedis = mine === 0;
    this.#armLeaseTimer(mine > 0 ? sentAt : undefined);
    this.#share = share;
    this.#contended = contended === 1;
    this.#hungry = hungry === 1 && participants > this.#limit;
    if (mine > sentHeld) {
      let granted = mine - sentHeld;
      while (granted > 0 && this.#pending.length > 0) {
        this.#grant(this.#pending.shift()!);
        granted--;
      }
    } else if (mine < sentHeld) {
      // Redis counts fewer of our open connections than there are (our lease expired and
      // the budget filled up meanwhile): all but `mine` must go.
      this.#revokeDownTo(mine);
    }
    // Redis counts other than we hold (releases meanwhile, a grant for a create that
    // stopped waiting): the next sync states it.
    if (this.#slots.size !== mine) this.#syncAgain = true;
    if ((this.#contended && this.#kept() > this.#share) || this.#hungry) this.#recheck?.();
    this.#schedulePoll();
  }

  #call(held: number, want: number): Promise<Answer> {
    const [holders, leases, waiting] = this.#keys;
    return this.#ready().then(async () => {
      const answer = await this.#redis.sluiceBudget(holders, leases, waiting, this.#holder, held, want, this.#limit, this.#leaseMs, 2 * POLL_MAX_MS + this.#timeoutMs);
      // SELECT runs before the script on the same connection: its failure is known by now.
      if (this.#unknownDatabase !== undefined) throw this.#unknownDatabase;
      return answer;
    });
  }

  /** Resolves once connected, within the Redis timeout; rejects with the reason it is not. */
  async #ready(): Promise<void> {
    const redis = this.#redis;
    if (this.#unknownDatabase !== undefined) throw this.#unknownDatabase;
    if (redis.status === 'ready') return;
    if (redis.status === 'wait' || redis.status === 'end') void redis.connect().catch(() => {});
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => done(this.#lastRedisError ?? new SluiceError('REDIS_TIMEOUT', `Redis did not answer within ${this.#timeoutMs} ms.`)),
        this.#timeoutMs,
      );
      const onReady = (): void => done(undefined);
      const onEnd = (): void => done(this.#lastRedisError ?? new SluiceError('REDIS_UNREACHABLE', 'The Redis connection closed.'));
      const done = (error: unknown): void => {
        clearTimeout(timer);
        redis.off('ready', onReady);
        redis.off('end', onEnd);
        if (error === undefined) resolve();
        else reject(error);
      };
      redis.once('ready', onReady);
      redis.once('end', onEnd);
    });
  }

  /**
   * Our lease, renewed at `renewedAt`, runs out in Redis `leaseMs` later, when others may
   * take our slots. Unless a renewal succeeds first, we give them up just before: idle
   * connections close at once, leased ones when they come back (they stay counted in our
   * reports meanwhile, so an answer from Redis in time restores them).
   */
  #armLeaseTimer(renewedAt: number | undefined): void {
    clearTimeout(this.#leaseTimer);
    this.#leaseTimer = undefined;
    if (renewedAt === undefined || this.#closed) return;
    const margin = Math.min(this.#renewMs, this.#leaseMs / 4);
    this.#leaseTimer = setTimeout(() => {
      this.#leaseTimer = undefined;
      this.#revokeDownTo(this.#localLimit ?? 0);
    }, renewedAt + this.#leaseMs - margin - performance.now());
    this.#leaseTimer.unref();
  }

  #onUnavailable(error: unknown): void {
    this.#unavailable = error;
    const localLimit = this.#localLimit;
    if (error instanceof ConnectionError && error.permanent) {
      // A wrong URL is not an outage: callers hear of it at once (the pool fails them).
      for (const take of this.#pending.splice(0)) this.#settle(take, error);
      return;
    }
    if (localLimit === undefined) {
      // Fail closed: no slot until Redis answers. The pool retries, with backoff.
      const refusal = new BudgetUnavailableError(
        `${this.description} cannot be consulted (${describeError(error)}): no new connection opens until Redis answers ` +
          "(whenUnavailable: 'fail-closed'). Pass whenUnavailable: { localLimit } to allow some meanwhile.",
        { cause: error },
      );
      for (const take of this.#pending.splice(0)) this.#settle(take, refusal);
    } else {
      while (this.#pending.length > 0 && this.#kept() < localLimit) this.#grant(this.#pending.shift()!);
      this.#schedulePoll();
    }
  }

  #grant(take: PendingTake): void {
    const slot = new Slot(this);
    this.#slots.add(slot);
    take.signal.removeEventListener('abort', take.onAbort);
    take.resolve(slot);
  }

  #settle(take: PendingTake, error: unknown): void {
    take.signal.removeEventListener('abort', take.onAbort);
    take.reject(error);
  }

  /**
   * Leaves at most `keep` slots that are not revoked: the others' connections close once
   * idle (the pool asks `keep()`, even below its `min`). Slots already on their way back
   * (yielding) go first.
   */
  #revokeDownTo(keep: number): void {
    const live = [...this.#slots].filter((slot) => slot.state !== 'revoked');
    let excess = live.length - Math.max(0, keep);
    if (excess <= 0) return;
    live.sort((a, b) => Number(b.state === 'yielding') - Number(a.state === 'yielding'));
    for (const slot of live) {
      if (excess-- <= 0) break;
      slot.state = 'revoked';
      this.#revokedTotal++;
    }
    this.#recheck?.();
  }

  /** While creates wait for a slot, ask again, backing off. */
  #schedulePoll(): void {
    if (this.#closed || this.#pending.length === 0 || this.#pollTimer !== undefined) return;
    const delay = this.#pollDelayMs * (0.75 + Math.random() / 2);
    this.#pollDelayMs = Math.min(POLL_MAX_MS, this.#pollDelayMs * 2);
    this.#pollTimer = setTimeout(() => {
      this.#pollTimer = undefined;
      this.#sync();
    }, delay);
  }
}
