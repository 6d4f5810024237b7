import type { ConnectionOptions as TlsOptions } from 'node:tls';
import { ConnectionLostError } from '../drivers/errors.js';
import type { RedisConnection } from '../drivers/redis/redis-connection.js';
import type { RedisDriver } from '../drivers/redis/redis-driver.js';
import { RedisTransactionConflictError } from '../drivers/redis/redis-errors.js';
import { describeRedisTarget, parseRedisUrl } from '../drivers/redis/redis-url.js';
import { InvalidOptionError, SluiceError } from '../errors.js';
import { type Lease, type Pool, PoolCreateError, type PoolSettings, type PoolStats } from '../pool/index.js';
import { connectionPool, giveBack } from './connection-pool.js';
import { checkMilliseconds } from '../pool/options.js';
import { currentDeadline, type Deadline, type DeadlineOptions, withDeadline } from './deadline-scope.js';
import {
  checkKeys,
  ConnectionSession,
  type RedisArgument,
  type RedisCommand,
  type RedisSession,
  type StreamRead,
  type XreadBlockOptions,
} from './redis-session.js';

/** Pool settings `connectRedis` passes on; the connection lifecycle hooks are sluice's own. */
export type RedisPoolOptions = PoolSettings<RedisConnection>;

export interface RedisConnectOptions {
  /** Pool settings. `max` defaults to 10: at most that many commands block at once. */
  readonly pool?: RedisPoolOptions;
  /** The deadline of a command run outside any `withDeadline` scope, in ms. Default: none. */
  readonly commandTimeoutMs?: number;
  /**
   * After a deadline or abort, how long to wait for the cancelled command's reply before the
   * connection is killed and closed instead. Default 2 s.
   */
  readonly cancelGraceMs?: number;
  /** TLS settings for a `rediss://` URL (CA, client certificate, `servername`). */
  readonly tls?: TlsOptions;
}

export interface RedisTransactionOptions extends DeadlineOptions {
  /** Keys to WATCH before `work` reads them: a change by anyone else makes EXEC apply nothing. */
  readonly watch: readonly string[];
  /** How many times to run the whole transaction again after a WATCH conflict. Default 0. */
  readonly retries?: number;
}

/**
 * Dedicated Redis connections from a sluice pool, for what needs a connection of its own:
 * blocking commands (BLPOP, XREAD BLOCK) and MULTI/WATCH transactions. Every command honours
 * the deadline in force: past it, a blocked command is unblocked on the server and its
 * connection goes back to the pool, usable.
 */
export interface RedisClient {
  /** `Redis 127.0.0.1:6379/0`: safe to log, never the user or password. */
  readonly location: string;
  readonly pool: Pool<RedisConnection>;
  /** One command on a connection of the pool. Honours `withDeadline` scopes and `options`. */
  command<T = unknown>(name: string, args?: readonly RedisArgument[], options?: DeadlineOptions): Promise<T>;
  /** `BLPOP`: the key and element popped, or null when `timeoutSeconds` passed (0: wait for ever, bounded by the deadline). */
  blpop(keys: readonly string[], timeoutSeconds: number, options?: DeadlineOptions): Promise<readonly [key: string, value: string] | null>;
  /** `XREAD BLOCK`: the new entries per stream, or null when `blockMs` passed (0: for ever, bounded by the deadline). */
  xreadBlock(streams: Readonly<Record<string, string>>, options: XreadBlockOptions): Promise<readonly StreamRead[] | null>;
  /**
   * Runs `work` with one connection, acquired once (the wait bounded by the deadline), and
   * gives it back clean (an open MULTI discarded, WATCHed keys unwatched).
   */
  withConnection<T>(work: (session: RedisSession) => Promise<T>, options?: DeadlineOptions): Promise<T>;
  /**
   * An optimistic transaction: WATCH `options.watch`, run `work` (it reads through the
   * session and returns the commands to apply), then MULTI, those commands and EXEC in one
   * round trip (MULTI, EXEC, DISCARD and WATCH cannot be among them). A WATCHed
   * key changed meanwhile: the whole of it runs again, up to `retries` times, then
   * `RedisTransactionConflictError` (`TRANSACTION_CONFLICT`). Resolves with EXEC's replies,
   * in order; a command that failed inside EXEC is a `RedisCommandError` in its place (Redis
   * applies the others: it has no rollback).
   */
  transaction(work: (session: RedisSession) => Promise<readonly RedisCommand[]>, options: RedisTransactionOptions): Promise<unknown[]>;
  stats(): PoolStats;
  /** Closes the pool and the control connection: no socket or timer is left. */
  close(): Promise<void>;
}

/**
 * Connects to Redis (`redis://[user:password@]host[:port][/db]`, `rediss://` for TLS).
 * Connections open lazily, on the first command; ioredis is loaded then too.
 */
export function connectRedis(url: string, options: RedisConnectOptions = {}): RedisClient {
  const target = parseRedisUrl(url);
  if (options.tls !== undefined && !target.tls) {
    throw new InvalidOptionError('tls', 'a redis:// URL is plain TCP: use rediss:// for TLS.');
  }
  const commandTimeoutMs = checkMilliseconds('commandTimeoutMs', options.commandTimeoutMs, Infinity, { allowInfinity: true });
  const cancelGraceMs = checkMilliseconds('cancelGraceMs', options.cancelGraceMs, 2_000, { least: 1 });
  const deadlineOf: () => Deadline | undefined =
    commandTimeoutMs === Infinity
      ? currentDeadline
      : () => currentDeadline() ?? { at: performance.now() + commandTimeoutMs, timeoutMs: commandTimeoutMs, signal: undefined };

  let loading: Promise<RedisDriver> | undefined;
  const driver = (): Promise<RedisDriver> =>
    (loading ??= import('../drivers/redis/redis-driver.js').then(
      ({ RedisDriver }) => new RedisDriver({ url, tls: options.tls, cancelGraceMs }),
      (error: unknown) => {
        // Marked permanent: the pool fails waiting callers at once instead of retrying.
        throw Object.assign(
          new SluiceError('DRIVER_MISSING', 'connectRedis needs the ioredis package (npm install ioredis).', { cause: error }),
          { permanent: true },
        );
      },
    ));

  const pool = connectionPool(
    async (signal) => (await driver()).connect({ signal }),
    (error) => error instanceof ConnectionLostError,
    options.pool,
  );

  const onConnection = async <T>(work: (session: ConnectionSession) => Promise<T>): Promise<T> => {
    const lease = await acquire(pool);
    const session = new ConnectionSession(lease.resource, deadlineOf);
    try {
      return await work(session);
    } finally {
      await session.end();
      await giveBack(lease);
    }
  };
  // No scope without a deadline option: an empty one would hide `commandTimeoutMs` (which
  // applies outside any scope) behind a deadline of Infinity.
  const withConnection = <T>(work: (session: ConnectionSession) => Promise<T>, scope?: DeadlineOptions): Promise<T> =>
    scope !== undefined && (scope.timeoutMs !== undefined || scope.signal !== undefined)
      ? withDeadline(scope, () => onConnection(work))
      : onConnection(work);

  // async: a bad option rejects, as every other failure of the call does.
  const transaction = async (
    work: (session: RedisSession) => Promise<readonly RedisCommand[]>,
    txOptions: RedisTransactionOptions,
  ): Promise<unknown[]> => {
    const { watch, retries = 0 } = txOptions ?? {};
    if (!Array.isArray(watch)) throw new InvalidOptionError('watch', 'expected the keys to WATCH (an array; [] for none).');
    if (watch.length > 0) checkKeys('watch', watch);
    if (!Number.isSafeInteger(retries) || retries < 0) throw new InvalidOptionError('retries', 'expected a whole number, 0 or more.');
    return withConnection(async (session) => {
      for (let attempt = 1; ; attempt += 1) {
        const replies = await runTransaction(session, watch, work);
        if (replies !== null) return replies;
        if (attempt > retries) throw new RedisTransactionConflictError(attempt);
      }
    }, txOptions);
  };

  return {
    location: `Redis ${describeRedisTarget(target)}`,
    pool,
    command: (name, args, commandOptions) => withConnection((session) => session.command(name, args), commandOptions),
    blpop: (keys, timeoutSeconds, blpopOptions) => withConnection((session) => session.blpop(keys, timeoutSeconds), blpopOptions),
    xreadBlock: (streams, xreadOptions) =>
      withConnection((session) => session.xreadBlock(streams, { blockMs: xreadOptions.blockMs, ...(xreadOptions.count !== undefined ? { count: xreadOptions.count } : {}) }), xreadOptions),
    withConnection,
    transaction,
    stats: () => pool.stats(),
    close: async () => {
      await pool.close();
      // A driver still loading is closed once loaded; one that failed to load holds nothing.
      await loading?.then((loaded) => loaded.close(), () => {});
    },
  };
}

/**
 * One try of a transaction: WATCH, work, then MULTI, its commands and EXEC in one round trip.
 * Null when EXEC applied nothing because a WATCHed key changed. Whatever is left open on a
 * failure (WATCH) is undone when the connection goes back to the pool.
 */
async function runTransaction(
  session: ConnectionSession,
  watch: readonly string[],
  work: (session: RedisSession) => Promise<readonly RedisCommand[]>,
): Promise<unknown[] | null> {
  if (watch.length > 0) await session.command('WATCH', watch);
  const commands = await work(session);
  if (!Array.isArray(commands)) throw new InvalidOptionError('transaction', 'work must resolve with an array of commands to queue.');
  // A command refused while queued (wrong arguments) rejects, naming it; EXEC applied nothing.
  return session.multiExec(commands);
}

/** A connection of the pool, the wait bounded by the deadline in force. */
async function acquire(pool: Pool<RedisConnection>): Promise<Lease<RedisConnection>> {
  const deadline = currentDeadline();
  const remainingMs = deadline === undefined ? Infinity : Math.max(0, deadline.at - performance.now());
  try {
    return await pool.acquire({
      ...(deadline?.signal !== undefined ? { signal: deadline.signal } : {}),
      ...(remainingMs !== Infinity ? { timeoutMs: remainingMs } : {}),
    });
  } catch (error) {
    // A wrong password reaches the caller as itself (AUTH_FAILED), not as POOL_CREATE_FAILED.
    if (error instanceof PoolCreateError && error.cause instanceof SluiceError) throw error.cause;
    throw error;
  }
}

