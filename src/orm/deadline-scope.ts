import { AsyncLocalStorage } from 'node:async_hooks';
import { checkMilliseconds } from '../pool/options.js';
import type { CancelSignal } from '../drivers/driver.js';
import { QueryTimeoutError } from '../drivers/errors.js';
import { DeadlineSignal } from './deadline-signal.js';

/** One deadline for everything a piece of work does: a timeout, a signal, or both. */
export interface DeadlineOptions {
  /** Milliseconds from now. Nested scopes keep the earlier deadline. */
  readonly timeoutMs?: number | undefined;
  /** Aborting it cancels whatever query is running (on the server) and fails the rest. */
  readonly signal?: AbortSignal | undefined;
}

/** The deadline in force, as carried through async calls. */
export interface Deadline {
  /** `performance.now()` time when it passes; `Infinity` for none. */
  readonly at: number;
  /** The timeout that set `at`, for the error message. */
  readonly timeoutMs: number;
  readonly signal: AbortSignal | undefined;
}

const scope = new AsyncLocalStorage<Deadline | undefined>();

/** The deadline in force here, if any. */
export function currentDeadline(): Deadline | undefined {
  return scope.getStore();
}

/** Combines two optional signals into one that aborts with whichever aborts first. */
export function anySignal(a: AbortSignal | undefined, b: AbortSignal | undefined): AbortSignal | undefined {
  if (a === undefined) return b;
  if (b === undefined || a === b) return a;
  return AbortSignal.any([a, b]);
}

/**
 * Runs `work` with a deadline that every query inside it honours, however deep the call
 * chain: `withDeadline({ timeoutMs: 200, signal: request.signal }, () => handler())`.
 * A nested scope can only shorten the deadline, never extend it.
 */
export function withDeadline<T>(options: DeadlineOptions, work: () => T): T {
  const parent = scope.getStore();
  const timeoutMs = checkMilliseconds('timeoutMs', options.timeoutMs, Infinity, { allowInfinity: true });
  const at = performance.now() + timeoutMs;
  const deadline: Deadline =
    parent !== undefined && parent.at <= at
      ? { at: parent.at, timeoutMs: parent.timeoutMs, signal: anySignal(parent.signal, options.signal) }
      : { at, timeoutMs, signal: anySignal(parent?.signal, options.signal) };
  return scope.run(deadline, work);
}

/** Runs `work` outside any deadline: for cleanup (ROLLBACK) that must run after one passed. */
export function withoutDeadline<T>(work: () => T): T {
  // run(undefined), not exit(): on Node 20, exit() switches the promise hooks of every
  // AsyncLocalStorage off and on again, a cost paid on every call.
  return scope.getStore() === undefined ? work() : scope.run(undefined, work);
}

/**
 * A signal for one statement: aborts when the scope's signal or the call's own signal
 * aborts (with their reason), or when the deadline passes (with a `QueryTimeoutError`).
 * `dispose()` stops its timer once the statement settles.
 */
export interface StatementSignal {
  readonly signal: CancelSignal | undefined;
  /** Milliseconds left before the deadline; `Infinity` for none. */
  readonly remainingMs: number;
  dispose(): void;
}

const NO_DEADLINE: StatementSignal = { signal: undefined, remainingMs: Infinity, dispose: () => {} };

export function statementSignal(deadline: Deadline | undefined, callSignal?: AbortSignal): StatementSignal {
  if (deadline === undefined && callSignal === undefined) return NO_DEADLINE;
  const outer = anySignal(deadline?.signal, callSignal);
  const remainingMs = deadline === undefined ? Infinity : deadline.at - performance.now();
  if (remainingMs === Infinity) return { signal: outer, remainingMs, dispose: () => {} };
  const timeout = (): QueryTimeoutError => new QueryTimeoutError(deadline!.timeoutMs);
  // Aborted already: its reason wins over a deadline that has also passed.
  if (outer?.aborted === true) return { signal: outer, remainingMs: Math.max(0, remainingMs), dispose: () => {} };
  if (remainingMs <= 0) return { signal: DeadlineSignal.aborted(timeout()), remainingMs: 0, dispose: () => {} };
  const signal = new DeadlineSignal();
  const timer = setTimeout(() => signal.abort(timeout()), Math.ceil(remainingMs));
  if (outer === undefined) return { signal, remainingMs, dispose: () => clearTimeout(timer) };
  const onOuterAbort = (): void => signal.abort(outer.reason);
  if (outer.aborted) signal.abort(outer.reason);
  else outer.addEventListener('abort', onOuterAbort, { once: true });
  return {
    signal,
    remainingMs,
    dispose: () => {
      clearTimeout(timer);
      outer.removeEventListener('abort', onOuterAbort);
    },
  };
}
