import type { CancelSignal } from './driver.js';

/**
 * True when `error` is the reason of `signal`'s abort: such an error reaches the caller
 * untouched, as fetch() does, never translated. (`aborted` is read afresh: TypeScript keeps
 * it narrowed from a check made before an await.)
 */
export function isAbortOf(signal: CancelSignal | undefined, error: unknown): boolean {
  return signal !== undefined && (signal.aborted as boolean) && error === signal.reason;
}
