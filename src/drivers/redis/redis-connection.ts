import type { Redis } from 'ioredis';
import { describeError, InvalidOptionError, SluiceError } from '../../errors.js';
import { ConnectionHealth } from '../connection-health.js';
import type { CancelSignal } from '../driver.js';
import { ConnectionLostError } from '../errors.js';
import { within } from '../time-limit.js';
import { drop, quit, type RedisControlConnection, type UnblockOutcome } from './control-connection.js';
import { type BlockOutcome, NOT_QUEUED, type QueuedCommand, readBlock } from './multi-block.js';
import { isReplyError, translateCommandError } from './redis-errors.js';

/** One argument of a Redis command, sent as a bulk string. */
export type RedisArgument = string | number | Buffer;

export interface RedisSendOptions {
  /**
   * Aborting it unblocks the command on the server (`CLIENT UNBLOCK`); the call rejects with
   * `signal.reason`, unless the command had already completed: then it resolves with its
   * reply, so nothing a command took from the server (a popped element) is lost.
   */
  readonly signal?: CancelSignal | undefined;
}

/**
 * Commands refused on a pooled connection: they change the connection for whoever uses it
 * next in a way `reset()` cannot undo without `RESET` (which drops AUTH and SELECT), or
 * they take the connection over (subscriber, monitor and replication modes).
 */
const REFUSED = new Map<string, string>([
  ['SUBSCRIBE', 'a subscriber needs a connection of its own'],
  ['PSUBSCRIBE', 'a subscriber needs a connection of its own'],
  ['SSUBSCRIBE', 'a subscriber needs a connection of its own'],
  ['MONITOR', 'MONITOR takes the connection over'],
  ['SYNC', 'replication takes the connection over'],
  ['PSYNC', 'replication takes the connection over'],
  ['RESET', 'it would drop the connection\'s AUTH and SELECT'],
  ['QUIT', 'the pool closes connections'],
  ['HELLO', 'it would change the protocol or the user'],
  ['AUTH', 'the URL\'s user applies to every connection'],
  ['SELECT', 'the URL\'s database applies to every connection (redis://host:6379/2)'],
]);

type Outcome = { readonly ok: true; readonly reply: unknown } | { readonly ok: false; readonly error: unknown };

export type { QueuedCommand } from './multi-block.js';

/** Longest pause between two `CLIENT UNBLOCK`s for a command not blocked yet. */
const MAX_UNBLOCK_RETRY_DELAY_MS = 200;

/**
 * One dedicated ioredis connection, used by one caller at a time: for blocking commands
 * (BLPOP, XREAD BLOCK, WAIT) and MULTI/WATCH transactions, whose state belongs to one
 * connection.
 *
 * A command whose signal aborts is unblocked on the server with `CLIENT UNBLOCK <id> ERROR`
 * sent over the driver's control connection (the blocked connection cannot be told anything
 * itself), and its own reply is awaited, at most `cancelGraceMs`:
 * - `UNBLOCKED`: it stopped waiting; the call rejects with `signal.reason`, the connection is
 *   clean and stays usable;
 * - a reply: the command completed on the server first (BLPOP popped an element just as the
 *   deadline passed); the call resolves with it, since the server cannot take it back;
 * - nothing in time (a stalled network, a command that does not block but runs long): the
 *   connection is killed on the server (`CLIENT KILL ID`) and closed, and the call rejects
 *   with `signal.reason`.
 *
 * A MULTI block (`multiExec`) goes out in one write and blocks nothing on the server (Redis
 * runs blocking commands inside EXEC without waiting): on an abort there is nothing to
 * unblock, so its replies are awaited, at most `cancelGraceMs`; EXEC applied: the call
 * resolves with its replies; nothing applied: it rejects with `signal.reason`; no replies in
 * time: the connection is killed and closed, as above.
 *
 * No auto-reconnect: a connection that breaks is reported through `onBroken` and replaced
 * by the pool, so a command never silently runs on a different connection than its WATCH.
 */
export class RedisConnection {
  /** The server's `CLIENT ID` for this connection (what `CLIENT UNBLOCK` and `CLIENT LIST` name). */
  readonly clientId: number;
  readonly #redis: Redis;
  readonly #control: RedisControlConnection;
  readonly #cancelGraceMs: number;
  /** Lost or closed while a command ran: the server may keep it blocked (a stalled network): kill it. */
  readonly #health = new ConnectionHealth(() => void this.#control.kill(this.clientId, this.#cancelGraceMs));
  #inMulti = false;
  #watching = false;

  constructor(redis: Redis, clientId: number, control: RedisControlConnection, cancelGraceMs: number) {
    this.#redis = redis;
    this.clientId = clientId;
    this.#control = control;
    this.#cancelGraceMs = cancelGraceMs;
    // ioredis emits 'error' when the socket fails; unheard, that would crash the process.
    redis.on('error', (error: unknown) =>
      this.#health.markBroken(new ConnectionLostError(`The Redis connection failed (${describeError(error)}).`, { cause: error })),
    );
    // retryStrategy is off: 'end' is final.
    redis.on('end', () =>
      this.#health.markBroken(new ConnectionLostError('The Redis connection was closed.', { cause: undefined })),
    );
  }

  get broken(): boolean {
    return this.#health.broken;
  }

  onBroken(listener: (error: unknown) => void): void {
    this.#health.onBroken(listener);
  }

  /** True between MULTI and EXEC/DISCARD. */
  get inMulti(): boolean {
    return this.#inMulti;
  }

  /** True while keys are WATCHed (until EXEC, DISCARD or UNWATCH). */
  get watching(): boolean {
    return this.#watching;
  }

  /**
   * Sends one command (`send('BLPOP', ['jobs', 0])`) and resolves with its reply as ioredis
   * gives it (RESP2: strings, numbers, arrays, null). An error reply rejects with a
   * `RedisCommandError`; a lost connection with a `ConnectionLostError`.
   */
  async send<T = unknown>(command: string, args: readonly RedisArgument[] = [], options: RedisSendOptions = {}): Promise<T> {
    const name = checkCommand(command, args);
    const signal = options.signal;
    if (signal?.aborted === true) throw signal.reason;
    if (this.#health.broken) throw new ConnectionLostError('The Redis connection is closed.', { cause: undefined });
    if (this.#health.busy) {
      throw new SluiceError('CONNECTION_BUSY', 'A Redis connection runs one command at a time: await the previous one first.');
    }
    this.#health.busy = true;
    try {
      const running = this.#call(name, args);
      const first = signal === undefined ? await running : await untilAborted(running, signal);
      const outcome = first === 'aborted' ? await this.#cancel(running, signal!.reason) : first;
      if (outcome === 'aborted') throw signal!.reason;
      if (outcome.ok) return outcome.reply as T;
      throw translateCommandError(outcome.error, name);
    } finally {
      this.#health.busy = false;
    }
  }

  /**
   * Sends `MULTI`, `commands`, `EXEC` in one write and reads their replies in order: one
   * round trip. Resolves with EXEC's replies, in order (a command that failed inside EXEC is
   * a `RedisCommandError` in its slot: Redis applied the others, it has no rollback), or null
   * when a WATCHed key changed (nothing applied). Rejects with a `RedisCommandError` naming
   * the command the server refused while queuing (wrong arity, unknown command: EXEC then
   * applies nothing), with an `InvalidOptionError` before sending anything when a command is
   * refused on a pooled connection (SELECT, SUBSCRIBE...) or is not queued by Redis (MULTI,
   * EXEC, DISCARD, WATCH: WATCH before the block, with `send`), or when a MULTI is open already (sent with `send`).
   *
   * The commands are queued whatever the replies to the ones before them: a MULTI refused by
   * an ACL would let them run on their own (and EXEC fail), where separate round trips would
   * have stopped at MULTI.
   */
  async multiExec(commands: readonly QueuedCommand[], options: RedisSendOptions = {}): Promise<unknown[] | null> {
    if (!Array.isArray(commands)) throw new InvalidOptionError('commands', 'expected an array of { name, args } to queue.');
    const names = commands.map(({ name, args = [] }) => {
      const checked = checkCommand(name, args);
      if (NOT_QUEUED.has(checked)) throw new InvalidOptionError('command', `${checked} cannot be queued: Redis runs it at once, inside MULTI too.`);
      return checked;
    });
    const argsOf = commands.map(({ args = [] }) => {
      if (!Array.isArray(args)) throw new InvalidOptionError('args', 'expected an array of command arguments.');
      return args;
    });
    const signal = options.signal;
    if (signal?.aborted === true) throw signal.reason;
    if (this.#health.broken) throw new ConnectionLostError('The Redis connection is closed.', { cause: undefined });
    if (this.#health.busy) {
      throw new SluiceError('CONNECTION_BUSY', 'A Redis connection runs one command at a time: await the previous one first.');
    }
    if (this.#inMulti) {
      // Its MULTI would be refused as nested, and the commands queued into the open one.
      throw new InvalidOptionError('commands', 'a MULTI is open on this connection already: EXEC or DISCARD it first.');
    }
    this.#health.busy = true;
    try {
      const running = this.#block(names, argsOf);
      const first = signal === undefined ? await running : await untilAborted(running, signal);
      const outcome = first === 'aborted' ? await this.#afterAbort(running, signal!.reason) : first;
      if (outcome === 'aborted') throw signal!.reason;
      if (outcome.ok) return outcome.replies;
      throw outcome.error;
    } finally {
      this.#health.busy = false;
    }
  }

  /** Checks the connection answers. */
  async ping(options?: RedisSendOptions): Promise<void> {
    await this.send('PING', [], options);
  }

  /**
   * Makes the connection clean for its next user: DISCARD a MULTI left open, UNWATCH keys
   * left watched (not `RESET`, which would also drop AUTH and SELECT). Bounded by
   * `cancelGraceMs`; rejects when it cannot finish, and the connection is then closed.
   */
  async reset(): Promise<void> {
    if (this.#health.broken) throw new ConnectionLostError('The Redis connection is closed.', { cause: undefined });
    // A command still running (a BLPOP nobody awaited) would keep it busy for its next user.
    if (this.#health.busy) throw new SluiceError('CONNECTION_BUSY', 'A Redis connection cannot be reset while a command runs on it.');
    const command = this.#inMulti ? 'DISCARD' : this.#watching ? 'UNWATCH' : undefined;
    if (command === undefined) return;
    this.#health.busy = true;
    try {
      const outcome = await within(this.#call(command, []), this.#cancelGraceMs);
      if (outcome === undefined) {
        const error = new ConnectionLostError(`${command} did not answer in time; the Redis connection was closed.`, { cause: undefined });
        this.#abandon(error);
        throw error;
      }
      if (!outcome.ok) throw translateCommandError(outcome.error, command);
    } finally {
      this.#health.busy = false;
    }
  }

  /** Closes the connection: QUIT, bounded by `cancelGraceMs`, then the socket is dropped. Never rejects. */
  async close(): Promise<void> {
    const running = this.#health.busy && !this.#health.broken;
    // Busy: ConnectionHealth sends the CLIENT KILL (see the constructor).
    this.#health.retire();
    if (running) {
      // A QUIT would wait behind the running command (a blocked one: for ever): the socket
      // is dropped now, so nothing of it outlives close().
      drop(this.#redis);
      return;
    }
    await quit(this.#redis, this.#cancelGraceMs);
  }

  /** Sends a command; settles with its outcome, never rejects. Keeps the MULTI/WATCH state. */
  #call(name: string, args: readonly RedisArgument[]): Promise<Outcome> {
    let sent: Promise<unknown>;
    try {
      sent = this.#redis.call(name, args as RedisArgument[]);
    } catch (error) {
      return Promise.resolve({ ok: false, error });
    }
    return sent.then(
      (reply) => {
        this.#track(name, true);
        return { ok: true, reply };
      },
      (error: unknown) => {
        if (isReplyError(error)) this.#track(name, false, error);
        else this.#health.markBroken(translateCommandError(error, name));
        return { ok: false, error };
      },
    );
  }

  /**
   * Sends a MULTI block as one ioredis pipeline (one write); settles with its outcome, never
   * rejects. Keeps the MULTI/WATCH state from MULTI's and EXEC's replies (the queued commands'
   * replies are only QUEUED); a lost or garbled block leaves the connection broken.
   */
  async #block(names: readonly string[], argsOf: ReadonlyArray<readonly RedisArgument[]>): Promise<BlockOutcome> {
    let results: ReadonlyArray<readonly [Error | null, unknown]>;
    try {
      const pipeline = this.#redis.pipeline().call('MULTI');
      names.forEach((name, i) => pipeline.call(name, argsOf[i] as RedisArgument[]));
      results = (await pipeline.call('EXEC').exec()) ?? [];
    } catch (error) {
      // (A plain pipeline settles each command on its own; this is ioredis failing itself.)
      const lost = translateCommandError(error, 'MULTI');
      this.#abandon(lost);
      return { ok: false, error: lost };
    }
    for (const [index, name] of [[0, 'MULTI'], [names.length + 1, 'EXEC']] as const) {
      const error = results[index]?.[0];
      if (error === null) this.#track(name, true);
      else if (isReplyError(error)) this.#track(name, false, error);
    }
    const outcome = readBlock(names, results);
    if (!outcome.ok && outcome.error instanceof ConnectionLostError) this.#abandon(outcome.error);
    return outcome;
  }

  /**
   * An aborted MULTI block: nothing of it blocks, so its replies are awaited, at most
   * `cancelGraceMs`. EXEC applied it: its outcome (the server cannot take it back); it applied
   * nothing (refused, a WATCH conflict): 'aborted'; no replies in time: the connection is
   * given up (killed and closed) and 'aborted'.
   */
  async #afterAbort(running: Promise<BlockOutcome>, reason: unknown): Promise<BlockOutcome | 'aborted'> {
    const outcome = await within(running, this.#cancelGraceMs);
    if (outcome === undefined) {
      this.#abandon(new ConnectionLostError('A cancelled MULTI block did not answer in time; the Redis connection was killed.', { cause: reason }));
      return 'aborted';
    }
    return outcome.ok && outcome.replies !== null ? outcome : 'aborted';
  }

  /** Follows the server's transaction state from the commands that answered. */
  #track(name: string, ok: boolean, error?: Error): void {
    // "EXEC/DISCARD without MULTI" changes nothing on the server: keys WATCHed stay watched.
    const withoutMulti = error !== undefined && /without MULTI/i.test(error.message);
    switch (name) {
      case 'MULTI':
        // "MULTI calls can not be nested": still in the first one. Refused otherwise (an ACL): not in one.
        if (ok || (error !== undefined && /nested/i.test(error.message))) this.#inMulti = true;
        break;
      case 'EXEC':
        // A failed EXEC inside MULTI (EXECABORT) ends the transaction and unwatches, as a
        // WATCH conflict (a null reply) does.
        this.#inMulti = false;
        if (!withoutMulti) this.#watching = false;
        break;
      case 'DISCARD':
        if (ok) {
          this.#inMulti = false;
          this.#watching = false;
        } else if (withoutMulti) {
          this.#inMulti = false;
        }
        break;
      case 'WATCH':
        if (ok) this.#watching = true;
        break;
      case 'UNWATCH':
        if (ok) this.#watching = false;
        break;
    }
  }

  /**
   * Unblocks `running` on the server and waits for its reply, at most `cancelGraceMs`: its
   * reply when it completed first, 'aborted' when it was unblocked or the connection was
   * given up (killed and closed).
   */
  async #cancel(running: Promise<Outcome>, reason: unknown): Promise<Outcome | 'aborted'> {
    const giveUpAt = performance.now() + this.#cancelGraceMs;
    let settled = false;
    void running.then(() => (settled = true));
    const unblocking = this.#unblock(running, () => settled, giveUpAt);
    const outcome = await within(running, this.#cancelGraceMs);
    if (outcome === undefined) {
      this.#abandon(new ConnectionLostError('A cancelled Redis command did not answer in time; the connection was killed.', { cause: reason }));
      return 'aborted';
    }
    // Until the server has acted on the UNBLOCK, it could still land on the next command.
    const unblocked = await unblocking;
    if (unblocked === 'undelivered' && !this.#health.broken) {
      // The command ended on its own, but an UNBLOCK may still be on its way.
      this.#abandon(new ConnectionLostError('A Redis command was cancelled too late to be sure of the connection.', { cause: reason }));
    }
    // Completed on the server before the unblock: its reply is the caller's, never lost,
    // even when the connection broke after it arrived.
    return outcome.ok ? outcome : 'aborted';
  }

  /**
   * Sends `CLIENT UNBLOCK` until it has unblocked the command, or the command has answered,
   * or time is up. A command not blocked yet (still on its way to the server) is tried again
   * shortly after, backing off.
   */
  async #unblock(running: Promise<Outcome>, settled: () => boolean, giveUpAt: number): Promise<UnblockOutcome> {
    let delayMs = 10;
    for (;;) {
      const leftMs = giveUpAt - performance.now();
      if (leftMs <= 0) return 'undelivered';
      const outcome = await this.#control.unblock(this.clientId, leftMs);
      if (outcome !== 'not-blocked' || settled()) return outcome;
      await within(running, Math.min(delayMs, Math.max(1, giveUpAt - performance.now())));
      if (settled()) return 'not-blocked';
      delayMs = Math.min(2 * delayMs, MAX_UNBLOCK_RETRY_DELAY_MS);
    }
  }

  /** Gives the connection up: marked broken, killed on the server (it may still be blocked there), socket dropped. */
  #abandon(error: unknown): void {
    // Busy: ConnectionHealth sends the CLIENT KILL (see the constructor).
    this.#health.markBroken(error);
    drop(this.#redis);
  }
}

/** Waits for `running`, or until `signal` aborts: 'aborted' then (`running` goes on). */
async function untilAborted<T>(running: Promise<T>, signal: CancelSignal): Promise<T | 'aborted'> {
  let onAbort: (() => void) | undefined;
  const aborted = new Promise<'aborted'>((resolve) => {
    onAbort = () => resolve('aborted');
    signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    return await Promise.race([running, aborted]);
  } finally {
    signal.removeEventListener('abort', onAbort!);
  }
}

/** A command name, upper case; refuses what is not one, or what a pooled connection cannot take. */
function checkCommand(command: string, args: readonly RedisArgument[]): string {
  if (typeof command !== 'string' || !/^[A-Za-z][A-Za-z0-9_.|-]*$/.test(command)) {
    throw new InvalidOptionError('command', 'expected a Redis command name (GET, BLPOP); its arguments go in args.');
  }
  const name = command.toUpperCase();
  const why = REFUSED.get(name);
  if (why !== undefined) throw new InvalidOptionError('command', `${name} is not allowed on a pooled Redis connection: ${why}.`);
  // CLIENT REPLY OFF/SKIP: the server stops answering, and every later command would hang.
  if (name === 'CLIENT' && typeof args[0] === 'string' && args[0].toUpperCase() === 'REPLY') {
    throw new InvalidOptionError('command', 'CLIENT REPLY is not allowed on a pooled Redis connection: every later command would wait for a reply that never comes.');
  }
  return name;
}
