import type { Redis } from 'ioredis';
import { BackgroundRetries } from '../background-retries.js';
import { within } from '../time-limit.js';
import { isReplyError } from './redis-errors.js';

/** What one command on the control connection came to. */
type Sent = { readonly ok: true; readonly reply: unknown } | { readonly ok: false; readonly refused: boolean };

interface Current {
  readonly redis: Redis;
  /** True once connected; false when the connect failed (the connection is then dropped). */
  readonly opened: Promise<boolean>;
}

/** What `unblock` achieved. */
export type UnblockOutcome = 'unblocked' | 'not-blocked' | 'undelivered';

/**
 * The one connection a `RedisDriver` keeps outside its pool, to send `CLIENT UNBLOCK` and
 * `CLIENT KILL` for the connections it lent (a blocked connection cannot be told anything
 * itself: Redis reads its next command only once the blocking one has answered). Opened on
 * first use, opened again after it dies or stops answering, closed by `close()`. Never throws:
 * a command that cannot be delivered within its time resolves as such.
 */
export class RedisControlConnection {
  readonly #create: () => Redis;
  #current: Current | undefined;
  #closed = false;
  /** `CLIENT KILL`s waiting to be tried again. */
  readonly #retries = new BackgroundRetries();

  constructor(create: () => Redis) {
    this.#create = create;
  }

  /**
   * `CLIENT UNBLOCK <id> ERROR`: the blocked command of client `id` fails at once with an
   * `UNBLOCKED` error reply. `not-blocked` when the client was blocked on nothing (its command
   * had answered already, or had not reached the server yet).
   */
  async unblock(clientId: number, timeoutMs: number): Promise<UnblockOutcome> {
    const sent = await this.#deliver(['UNBLOCK', String(clientId), 'ERROR'], timeoutMs);
    if (sent === 'undelivered' || !sent.ok) return 'undelivered';
    return Number(sent.reply) === 1 ? 'unblocked' : 'not-blocked';
  }

  /**
   * `CLIENT KILL ID <id>`: closes client `id` on the server. True once done (or the client is
   * gone already). Not delivered in time, it is tried again in the background until it is, or
   * until `close()`: its target was abandoned in a state nobody knows (blocked, stalled).
   */
  async kill(clientId: number, timeoutMs: number): Promise<boolean> {
    const attempt = async (): Promise<boolean> => {
      const sent = await this.#deliver(['KILL', 'ID', String(clientId)], timeoutMs);
      // "ERR No such client": it is gone already, which is what the kill wanted.
      return sent !== 'undelivered' && (sent.ok || sent.refused);
    };
    const done = await attempt();
    if (!done) this.#retries.retry(attempt, timeoutMs);
    return done;
  }

  /** Closes the control connection, if one is open, and stops retries. Never rejects. */
  async close(timeoutMs: number): Promise<void> {
    this.#closed = true;
    this.#retries.stop();
    const current = this.#current;
    this.#current = undefined;
    if (current !== undefined) await quit(current.redis, timeoutMs);
  }

  /** One `CLIENT ...` command, bounded by `timeoutMs`; a dead control connection is replaced once. */
  async #deliver(args: readonly string[], timeoutMs: number): Promise<Sent | 'undelivered'> {
    if (this.#closed) return 'undelivered';
    let gaveUp = false;
    let used: Current | undefined;
    const attempt = async (): Promise<Sent | 'undelivered'> => {
      for (let tries = 0; tries < 2 && !this.#closed && !gaveUp; tries += 1) {
        const current = this.#connection();
        used = current;
        const sent = await send(current, args);
        if (sent.ok || sent.refused) return sent;
        this.#discard(current);
      }
      return 'undelivered';
    };
    const outcome = await within(attempt(), timeoutMs);
    if (outcome === undefined) {
      gaveUp = true;
      // A control connection that does not answer is no use: the next command opens another.
      if (used !== undefined) this.#discard(used);
      return 'undelivered';
    }
    return outcome;
  }

  #connection(): Current {
    if (this.#current !== undefined) return this.#current;
    const redis = this.#create();
    let current: Current | undefined;
    const forget = (): void => {
      if (current !== undefined && this.#current === current) this.#current = undefined;
    };
    // A control connection that dies while idle (a restart, a timeout) must not crash the
    // process: it is forgotten, and the next command opens another.
    redis.on('error', () => {});
    redis.on('end', forget);
    const opened = redis.connect().then(
      () => true,
      () => {
        forget();
        drop(redis);
        return false;
      },
    );
    current = { redis, opened };
    this.#current = current;
    return current;
  }

  #discard(current: Current): void {
    if (this.#current === current) this.#current = undefined;
    drop(current.redis);
  }
}

/** Sends `CLIENT <args>`: the reply, a refusal (an error reply), or neither (the connection is dead). */
async function send(current: Current, args: readonly string[]): Promise<Sent> {
  if (!(await current.opened)) return { ok: false, refused: false };
  try {
    return { ok: true, reply: await current.redis.call('CLIENT', ...args) };
  } catch (error) {
    return { ok: false, refused: isReplyError(error) };
  }
}

/**
 * Closes a connection at once, without a goodbye: pending commands fail with ioredis's
 * "Connection is closed". (ioredis's own `disconnect()` half-closes the socket and keeps a
 * timer for up to 2 s until the server answers; a stalled network never does.)
 */
export function drop(redis: Redis): void {
  redis.disconnect();
  (redis as unknown as { readonly stream?: { destroy(): void } }).stream?.destroy();
}

/**
 * Says goodbye (QUIT) and resolves once the connection has closed, or after `timeoutMs`, when
 * the socket is dropped instead. Never rejects.
 */
export async function quit(redis: Redis, timeoutMs: number): Promise<void> {
  if (redis.status === 'end') return;
  if (redis.status !== 'ready') {
    // Connecting, or closing already: nothing to say goodbye to.
    drop(redis);
    return;
  }
  const closed = new Promise<void>((resolve) => redis.once('end', () => resolve()));
  redis.quit().catch(() => drop(redis));
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, timeoutMs);
  });
  await Promise.race([closed, expired]);
  clearTimeout(timer);
  // (Read afresh: TypeScript keeps `status` narrowed from before the await.)
  if ((redis.status as string) !== 'end') drop(redis);
}
