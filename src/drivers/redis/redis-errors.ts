import { describeError, SluiceError } from '../../errors.js';
import { ConnectionError, ConnectionLostError } from '../errors.js';

/**
 * The Redis server answered a command with an error reply. `redisCode` is the reply's first
 * word (`WRONGTYPE`, `NOSCRIPT`, `BUSYGROUP`, `ERR`...), `command` the command's name. The
 * message names the command, never its arguments (they may be secrets); the server's own
 * text is kept, minus the part where Redis quotes arguments back.
 */
export class RedisCommandError extends SluiceError {
  readonly redisCode: string;
  /** The command's name, upper case (`LPUSH`); never its arguments. */
  readonly command: string;

  constructor(command: string, redisCode: string, message: string, options: { readonly cause: unknown }) {
    super('REDIS_ERROR', message, options);
    this.redisCode = redisCode;
    this.command = command;
  }
}

/**
 * A transaction's EXEC was refused because a WATCHed key changed after WATCH: nothing of it
 * was written. `retryable`: running the whole transaction again (reads included) may succeed.
 */
export class RedisTransactionConflictError extends SluiceError {
  readonly retryable = true;
  /** How many times the transaction was tried. */
  readonly attempts: number;

  constructor(attempts: number) {
    super(
      'TRANSACTION_CONFLICT',
      `A WATCHed key changed before EXEC, so the Redis transaction was not applied (${attempts} attempt${attempts === 1 ? '' : 's'}).`,
    );
    this.attempts = attempts;
  }
}

/** True when `error` is an error reply from the server (ioredis's `ReplyError`, RESP2 or RESP3). */
export function isReplyError(error: unknown): error is Error {
  return error instanceof Error && error.name === 'ReplyError';
}

/** The first word of an error reply: `WRONGTYPE`, `ERR`, `UNBLOCKED`. */
export function replyCode(error: Error): string {
  const word = /^([A-Z][A-Z0-9_-]*)\b/.exec(error.message)?.[1];
  return word ?? 'ERR';
}

/**
 * The server's text of an error reply, safe for a message: its first line, cut where Redis
 * quotes a command's arguments back (`unknown command 'x', with args beginning with: ...`),
 * and bounded in length.
 */
function safeReplyText(error: Error): string {
  let text = error.message.split('\n', 1)[0]!.trim();
  const quoted = text.search(/,? with args beginning with:/i);
  if (quoted !== -1) text = `${text.slice(0, quoted)} (arguments not shown)`;
  return text.length > 200 ? `${text.slice(0, 200)}...` : text;
}

/** Said when a command fails because the connection went away (ioredis's own text). */
const CLOSED = /Connection is closed|Command aborted due to connection close|Stream isn't writeable/i;

/**
 * A command's failure as sluice reports it: an error reply -> `RedisCommandError`; anything
 * else (the socket closed, a reset, a stream not writable) -> `ConnectionLostError`.
 */
export function translateCommandError(error: unknown, command: string): SluiceError {
  if (error instanceof SluiceError) return error;
  if (isReplyError(error)) {
    const code = replyCode(error);
    return new RedisCommandError(command, code, `Redis refused ${command}: ${safeReplyText(error)}`, { cause: error });
  }
  const why = error instanceof Error && CLOSED.test(error.message) ? 'the connection closed' : describeError(error);
  return new ConnectionLostError(`The Redis connection was lost during ${command} (${why}).`, { cause: error });
}

/** Replies that refuse credentials (Redis 6+ `WRONGPASS`, older `ERR invalid password`, `NOAUTH`, `NOPERM` on AUTH). */
function isAuthFailure(error: Error): boolean {
  const code = replyCode(error);
  return code === 'WRONGPASS' || code === 'NOAUTH' || /invalid password|invalid username-password/i.test(error.message);
}

/**
 * A failed connect: refused credentials -> `AUTH_FAILED`, a database index the server does not
 * have -> `UNKNOWN_DATABASE` (both permanent); the rest (refused, unreachable, reset, TLS)
 * -> `CONNECTION_FAILED`, retried by the pool. `target` is `host:port/db`, never credentials.
 */
export function translateConnectError(error: unknown, target: string): ConnectionError {
  const details = { cause: error, driverCode: undefined as string | undefined };
  if (isReplyError(error)) {
    details.driverCode = replyCode(error);
    if (isAuthFailure(error)) {
      return new ConnectionError('AUTH_FAILED', `Redis at ${target} refused the credentials (${details.driverCode}).`, details);
    }
    if (/DB index is out of range/i.test(error.message)) {
      return new ConnectionError('UNKNOWN_DATABASE', `Redis at ${target} has no such database (${safeReplyText(error)}).`, details);
    }
    return new ConnectionError('CONNECTION_FAILED', `Redis at ${target} refused the connection: ${safeReplyText(error)}`, details);
  }
  details.driverCode = describeError(error);
  return new ConnectionError('CONNECTION_FAILED', `Could not connect to Redis at ${target} (${details.driverCode}).`, details);
}
