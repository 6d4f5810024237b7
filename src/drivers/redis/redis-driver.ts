import type { ConnectionOptions as TlsOptions } from 'node:tls';
import { Redis } from 'ioredis';
import { InvalidOptionError } from '../../errors.js';
import type { ConnectOptions } from '../driver.js';
import { ConnectionLostError } from '../errors.js';
import { drop, RedisControlConnection } from './control-connection.js';
import { RedisConnection } from './redis-connection.js';
import { translateConnectError } from './redis-errors.js';
import { describeRedisTarget, parseRedisUrl, type RedisTarget } from './redis-url.js';

export interface RedisDriverOptions {
  /** `redis://[user:password@]host[:port][/db]`, or `rediss://` for TLS. */
  readonly url: string;
  /** TLS settings (CA, client certificate, `servername`...) for a `rediss://` URL. */
  readonly tls?: TlsOptions | undefined;
  /**
   * After an abort, how long to wait for a cancelled command's reply (and for the UNBLOCK to
   * be delivered) before the connection is killed and closed. Also bounds QUIT, DISCARD and
   * UNWATCH on reset. Default 2 s.
   */
  readonly cancelGraceMs?: number | undefined;
}

/**
 * Opens dedicated Redis connections over ioredis, and keeps the control connection that
 * unblocks and kills them. Every connection: RESP2 (replies in the shapes Redis's command
 * reference documents), no offline queue, no retries, no reconnect (a broken connection is
 * the pool's to replace), the URL's database selected once at connect.
 */
export class RedisDriver {
  /** `Redis 127.0.0.1:6379/0`: safe to log, never the user or password. */
  readonly location: string;
  readonly #target: RedisTarget;
  readonly #tls: TlsOptions | undefined;
  readonly #cancelGraceMs: number;
  readonly #control: RedisControlConnection;

  constructor(options: RedisDriverOptions) {
    const { cancelGraceMs } = options;
    if (cancelGraceMs !== undefined && !(Number.isFinite(cancelGraceMs) && cancelGraceMs > 0)) {
      throw new InvalidOptionError('cancelGraceMs', 'must be a positive number of milliseconds');
    }
    this.#target = parseRedisUrl(options.url);
    if (options.tls !== undefined && !this.#target.tls) {
      throw new InvalidOptionError('tls', 'a redis:// URL is plain TCP: use rediss:// for TLS.');
    }
    this.#tls = options.tls;
    this.#cancelGraceMs = cancelGraceMs ?? 2_000;
    this.location = `Redis ${describeRedisTarget(this.#target)}`;
    this.#control = new RedisControlConnection(() => this.#create('sluice-control'));
  }

  /**
   * Opens a connection, selects the URL's database and reads its `CLIENT ID`. Rejects with a
   * `ConnectionError` (`AUTH_FAILED`, `UNKNOWN_DATABASE`: permanent; `CONNECTION_FAILED`),
   * or with `signal.reason` once the signal aborts (the half-open connection is dropped).
   */
  async connect({ signal }: ConnectOptions): Promise<RedisConnection> {
    if (signal.aborted) throw signal.reason;
    const target = describeRedisTarget(this.#target);
    const redis = this.#create('sluice');
    // ioredis reports why a connect failed only as an 'error' event (the promise says
    // "Connection is closed."). The listener stays after a failure: a late socket error
    // must not become an unhandled 'error'.
    let lastError: unknown;
    const onError = (error: unknown): void => {
      lastError = error;
    };
    redis.on('error', onError);
    const onAbort = (): void => drop(redis);
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      try {
        await redis.connect();
      } catch (error) {
        if (signal.aborted as boolean) throw signal.reason;
        throw translateConnectError(lastError ?? error, target);
      }
      let clientId: number;
      try {
        // ioredis's own `db` option reports a failed SELECT as an 'error' event and goes on
        // in database 0: selected here instead, so that a wrong database fails the connect.
        if (this.#target.db !== 0) await redis.call('SELECT', [this.#target.db]);
        clientId = Number(await redis.call('CLIENT', ['ID']));
      } catch (error) {
        if (signal.aborted as boolean) throw signal.reason;
        throw translateConnectError(error, target);
      }
      if (signal.aborted as boolean) throw signal.reason;
      const connection = new RedisConnection(redis, clientId, this.#control, this.#cancelGraceMs);
      redis.off('error', onError);
      return connection;
    } catch (error) {
      drop(redis);
      throw error;
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
  }

  /** Whether an error from a command leaves its connection unusable. */
  isFatal(error: unknown): boolean {
    return error instanceof ConnectionLostError;
  }

  /** Closes the control connection and stops its retries. Connections already lent are closed by their owner. */
  async close(): Promise<void> {
    await this.#control.close(this.#cancelGraceMs);
  }

  #create(connectionName: string): Redis {
    const target = this.#target;
    return new Redis({
      host: target.host,
      port: target.port,
      ...(target.username !== undefined ? { username: target.username } : {}),
      ...(target.password !== undefined ? { password: target.password } : {}),
      ...(target.tls ? { tls: { ...this.#tls } } : {}),
      connectionName,
      // Replies in RESP2 shapes, which the typed helpers read (RESP3 maps would differ).
      protocol: 2,
      lazyConnect: true,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
      autoResubscribe: false,
      autoResendUnfulfilledCommands: false,
      // A server still loading its data answers LOADING to commands: reported, not waited for.
      enableReadyCheck: false,
      disableClientInfo: true,
      maintNotifications: 'disabled',
    });
  }
}
