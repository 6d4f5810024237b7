/** The largest delay `setTimeout` honours; beyond it Node fires after 1 ms instead. */
const MAX_TIMER_DELAY_MS = 2 ** 31 - 1;

/**
 * `setTimeout` that treats `Infinity` as "never" (no timer at all) and clamps long
 * delays instead of letting them overflow into an immediate fire. An `unref`'d timer
 * never keeps the process alive on its own.
 */
export function startTimer(
  delayMs: number,
  callback: () => void,
  unref: boolean,
): ReturnType<typeof setTimeout> | undefined {
  if (delayMs === Infinity) return undefined;
  const timer = setTimeout(callback, Math.min(Math.max(0, Math.ceil(delayMs)), MAX_TIMER_DELAY_MS));
  if (unref) timer.unref();
  return timer;
}

/**
 * Delay before retry number `attempt` (1-based): exponential from `initialMs`, capped at
 * `maxMs`, with "equal jitter" (between half and all of it) so that many pools recovering
 * from the same outage do not retry in lockstep.
 */
export function retryDelay(attempt: number, initialMs: number, maxMs: number): number {
  const ceiling = Math.min(maxMs, initialMs * 2 ** Math.min(attempt - 1, 30));
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

/** What `raceCaller` resolves to when the caller stopped waiting first. */
export const CALLER_GONE: unique symbol = Symbol('sluice.callerGone');

/**
 * Waits for `work` (which must never reject) on behalf of a caller, but no longer than the
 * caller does: resolves to `CALLER_GONE` once `signal` aborts or `timeoutMs` passes. The
 * work itself goes on; whoever started it decides what to do with its result.
 */
export function raceCaller<T>(
  work: Promise<T>,
  signal: AbortSignal | undefined,
  timeoutMs: number,
): Promise<T | typeof CALLER_GONE> {
  if (signal?.aborted === true || timeoutMs <= 0) return Promise.resolve(CALLER_GONE);
  return new Promise((resolve) => {
    const finish = (value: T | typeof CALLER_GONE): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', gone);
      resolve(value);
    };
    const gone = (): void => finish(CALLER_GONE);
    const timer = startTimer(timeoutMs, gone, false);
    signal?.addEventListener('abort', gone, { once: true });
    void work.then(finish);
  });
}
