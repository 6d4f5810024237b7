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
