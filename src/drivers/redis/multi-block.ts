import type { SluiceError } from '../../errors.js';
import { ConnectionLostError } from '../errors.js';
import type { RedisArgument } from './redis-connection.js';
import { isReplyError, translateCommandError } from './redis-errors.js';

/** One command queued between MULTI and EXEC: `{ name: 'INCRBY', args: ['stock', -1] }`. */
export interface QueuedCommand {
  readonly name: string;
  readonly args?: readonly RedisArgument[];
}

/**
 * What a MULTI block came to, read from its replies: EXEC's replies (a command that failed
 * inside EXEC is a `RedisCommandError` in its slot; Redis applied the others), null when a
 * WATCHed key changed (nothing applied), or the error the block fails with.
 */
export type BlockOutcome =
  | { readonly ok: true; readonly replies: unknown[] | null }
  | { readonly ok: false; readonly error: SluiceError };

/**
 * Commands Redis runs at once even between MULTI and EXEC, without queuing them (QUIT and
 * RESET, also such, are refused on a pooled connection anyway): one inside the block would
 * end or nest it half-way, or fail without aborting EXEC.
 */
export const NOT_QUEUED = new Set(['MULTI', 'EXEC', 'DISCARD', 'WATCH']);

/**
 * Reads the replies of `MULTI, names..., EXEC` sent in one go, in order (`results` as an
 * ioredis pipeline gives them: `[error, reply]` each). `names` are the queued commands' names.
 *
 * - An error that is not a reply (the connection went away), or replies that do not fit the
 *   block, win: `ConnectionLostError` (the connection's state is unknown: it must be closed).
 * - MULTI refused: its error (see `RedisConnection.multiExec` on why that cannot happen for a nesting).
 * - A command refused while queued (wrong arity, unknown command, OOM): EXEC answered
 *   EXECABORT and nothing was applied; the error names the first command refused, not EXEC.
 */
export function readBlock(names: readonly string[], results: ReadonlyArray<readonly [Error | null, unknown]>): BlockOutcome {
  const frame = ['MULTI', ...names, 'EXEC'];
  if (results.length !== frame.length) {
    return { ok: false, error: unknownState(`A MULTI block of ${frame.length} commands got ${results.length} replies`) };
  }
  for (let i = 0; i < frame.length; i++) {
    const error = results[i]![0];
    if (error !== null && !isReplyError(error)) return { ok: false, error: translateCommandError(error, frame[i]!) };
  }
  const [multiError] = results[0]!;
  if (multiError !== null) return { ok: false, error: translateCommandError(multiError, 'MULTI') };
  const [execError, replies] = results[frame.length - 1]!;
  if (execError !== null) {
    // EXECABORT: the first command refused while queued is what the caller must fix.
    const refused = results.findIndex(([error], i) => i > 0 && error !== null);
    return { ok: false, error: translateCommandError(results[refused]![0], frame[refused]!) };
  }
  if (replies === null) return { ok: true, replies: null };
  if (!Array.isArray(replies) || replies.length !== names.length) return { ok: false, error: unknownState('EXEC answered otherwise than the block') };
  return { ok: true, replies: replies.map((reply, index) => (isReplyError(reply) ? translateCommandError(reply, names[index]!) : reply)) };
}

function unknownState(what: string): ConnectionLostError {
  return new ConnectionLostError(`${what}; the Redis connection's state is unknown, so it was closed.`, { cause: undefined });
}
