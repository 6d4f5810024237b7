import type { CancelSignal } from '../drivers/driver.js';
import type { RedisArgument, RedisConnection } from '../drivers/redis/redis-connection.js';
import { InvalidOptionError, SluiceError } from '../errors.js';
import { type Deadline, type DeadlineOptions, statementSignal, withDeadline } from './deadline-scope.js';

export type { RedisArgument } from '../drivers/redis/redis-connection.js';

/** One command of a transaction: `{ name: 'INCRBY', args: ['stock', -1] }`. */
export interface RedisCommand {
  readonly name: string;
  readonly args?: readonly RedisArgument[];
}

/** One entry of a stream, as XREAD returns it. */
export interface StreamEntry {
  readonly id: string;
  /** The entry's fields; a field given twice to XADD keeps its last value. */
  readonly fields: Readonly<Record<string, string>>;
}

/** The new entries of one stream. */
export interface StreamRead {
  readonly stream: string;
  readonly entries: readonly StreamEntry[];
}

export interface XreadBlockOptions extends DeadlineOptions {
  /** `BLOCK` milliseconds; 0 waits for ever (bounded only by the deadline). */
  readonly blockMs: number;
  /** `COUNT`: most entries returned per stream. Default: all. */
  readonly count?: number;
}

/**
 * Commands on one dedicated connection, one at a time (a second call waits for the first).
 * Each command runs under the deadline in force (`withDeadline`, the call's own `timeoutMs`
 * and `signal`, else the client's `commandTimeoutMs`). Usable only inside the callback it
 * was given to.
 */
export interface RedisSession {
  /** The server's `CLIENT ID` of the connection: what `CLIENT LIST` shows. */
  readonly clientId: number;
  /** One command: `command('GET', ['key'])`. The reply as ioredis gives it in RESP2 (strings, numbers, arrays, null). */
  command<T = unknown>(name: string, args?: readonly RedisArgument[], options?: DeadlineOptions): Promise<T>;
  /** `BLPOP keys... timeout`: the key and element popped, or null when `timeoutSeconds` passed first. */
  blpop(keys: readonly string[], timeoutSeconds: number, options?: DeadlineOptions): Promise<readonly [key: string, value: string] | null>;
  /**
   * `XREAD BLOCK ms [COUNT n] STREAMS keys... ids...` with `streams` mapping each key to the
   * id to read after (`'$'`: only entries added from now on). Null when `blockMs` passed first.
   */
  xreadBlock(streams: Readonly<Record<string, string>>, options: XreadBlockOptions): Promise<readonly StreamRead[] | null>;
}

/** Says whether a deadline option was given, so that a call without one costs no scope. */
function hasDeadline(options: DeadlineOptions | undefined): options is DeadlineOptions {
  return options !== undefined && (options.timeoutMs !== undefined || options.signal !== undefined);
}

export function checkKeys(option: string, keys: readonly string[]): void {
  if (!Array.isArray(keys) || keys.length === 0 || !keys.every((key) => typeof key === 'string')) {
    throw new InvalidOptionError(option, 'expected a non-empty array of key names.');
  }
}

/** The session a `withConnection` callback gets; `end()` makes it unusable once the callback is over. */
export class ConnectionSession implements RedisSession {
  readonly #connection: RedisConnection;
  readonly #deadline: () => Deadline | undefined;
  /** Settles when the last command sent has settled: commands run one after another. */
  #tail: Promise<void> = Promise.resolve();
  #ended = false;
  /** Aborted by `end()`: cancels a command still running then, as a deadline would. */
  readonly #ending = new AbortController();

  constructor(connection: RedisConnection, deadline: () => Deadline | undefined) {
    this.#connection = connection;
    this.#deadline = deadline;
  }

  get clientId(): number {
    return this.#connection.clientId;
  }

  /**
   * Ends the session: commands not started yet reject with `SESSION_ENDED`; one still running
   * (a BLPOP the callback did not await) is cancelled as at a deadline (unblocked on the
   * server; its reply kept if it had completed) and awaited, so that the connection goes
   * back to the pool with nothing running on it.
   */
  async end(): Promise<void> {
    this.#ended = true;
    this.#ending.abort(sessionEnded());
    await this.#tail;
  }

  command<T = unknown>(name: string, args: readonly RedisArgument[] = [], options?: DeadlineOptions): Promise<T> {
    return hasDeadline(options) ? withDeadline(options, () => this.#send<T>(name, args)) : this.#send<T>(name, args);
  }

  async blpop(
    keys: readonly string[],
    timeoutSeconds: number,
    options?: DeadlineOptions,
  ): Promise<readonly [key: string, value: string] | null> {
    checkKeys('keys', keys);
    if (typeof timeoutSeconds !== 'number' || !Number.isFinite(timeoutSeconds) || timeoutSeconds < 0) {
      throw new InvalidOptionError('timeoutSeconds', 'expected a number of seconds, 0 (wait for ever) or more.');
    }
    const reply = await this.command<[string, string] | null>('BLPOP', [...keys, timeoutSeconds], options);
    return reply === null ? null : [reply[0], reply[1]];
  }

  async xreadBlock(streams: Readonly<Record<string, string>>, options: XreadBlockOptions): Promise<readonly StreamRead[] | null> {
    const keys = Object.keys(streams ?? {});
    checkKeys('streams', keys);
    const { blockMs, count } = options;
    if (!Number.isSafeInteger(blockMs) || blockMs < 0) {
      throw new InvalidOptionError('blockMs', 'expected a whole number of milliseconds, 0 (wait for ever) or more.');
    }
    if (count !== undefined && !(Number.isSafeInteger(count) && count >= 1)) {
      throw new InvalidOptionError('count', 'expected a whole number, 1 or more.');
    }
    const args: RedisArgument[] = ['BLOCK', blockMs, ...(count !== undefined ? ['COUNT', count] : []), 'STREAMS', ...keys];
    for (const key of keys) args.push(streams[key]!);
    const reply = await this.command<Array<[string, Array<[string, string[]]>]> | null>('XREAD', args, options);
    return reply === null ? null : reply.map(([stream, entries]) => ({ stream, entries: entries.map(toEntry) }));
  }

  /**
   * MULTI, `commands`, EXEC in one round trip (`RedisConnection.multiExec`), under the deadline
   * in force: EXEC's replies, or null when a WATCHed key changed. What `transaction` sends.
   */
  multiExec(commands: readonly RedisCommand[]): Promise<unknown[] | null> {
    return this.#inTurn((signal) => this.#connection.multiExec(commands, { signal }));
  }

  #send<T>(name: string, args: readonly RedisArgument[]): Promise<T> {
    return this.#inTurn((signal) => this.#connection.send<T>(name, args, { signal }));
  }

  /** Runs `run` once the calls before it have settled, with the statement signal of the deadline then in force. */
  async #inTurn<T>(run: (signal: CancelSignal | undefined) => Promise<T>): Promise<T> {
    if (this.#ended) throw sessionEnded();
    const turn = this.#tail;
    let done!: () => void;
    this.#tail = new Promise<void>((resolve) => (done = resolve));
    try {
      await turn;
      if (this.#ended) throw sessionEnded();
      // The deadline as it is now, after the wait for the previous command.
      const statement = statementSignal(this.#deadline(), this.#ending.signal);
      try {
        return await run(statement.signal);
      } finally {
        statement.dispose();
      }
    } finally {
      done();
    }
  }
}

function sessionEnded(): SluiceError {
  return new SluiceError(
    'SESSION_ENDED',
    'This Redis session has ended (its callback returned): its connection is back in the pool.',
  );
}

function toEntry([id, flat]: [string, string[]]): StreamEntry {
  // No prototype: a field named `__proto__` is a field like any other.
  const fields = Object.create(null) as Record<string, string>;
  // (A deleted entry can come back with no fields: null.)
  for (let i = 0; i + 1 < (flat?.length ?? 0); i += 2) fields[flat[i]!] = flat[i + 1]!;
  return { id, fields };
}
