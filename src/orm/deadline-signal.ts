import type { CancelSignal } from '../drivers/driver.js';

/**
 * The signal of one statement under a deadline: what a driver needs of an `AbortSignal`
 * (`aborted`, `reason`, abort listeners) and nothing more. An `AbortController` per
 * statement, with its EventTarget, was measured at about a sixth of the client-side cost
 * of a Kysely query under `withDeadline`; this costs an object and, once listened to, an
 * array. Listeners run once, in order, when it aborts.
 */
export class DeadlineSignal implements CancelSignal {
  #aborted = false;
  #reason: unknown = undefined;
  #listeners: Array<() => void> | undefined;

  /** A signal already aborted with `reason`. */
  static aborted(reason: unknown): DeadlineSignal {
    const signal = new DeadlineSignal();
    signal.abort(reason);
    return signal;
  }

  get aborted(): boolean {
    return this.#aborted;
  }

  get reason(): unknown {
    return this.#reason;
  }

  addEventListener(_type: 'abort', listener: () => void): void {
    // As with an AbortSignal: a listener added after the abort is never called.
    if (this.#aborted) return;
    const listeners = (this.#listeners ??= []);
    // As with an EventTarget: the same listener twice is one listener.
    if (!listeners.includes(listener)) listeners.push(listener);
  }

  removeEventListener(_type: 'abort', listener: () => void): void {
    const listeners = this.#listeners;
    if (listeners === undefined) return;
    const index = listeners.indexOf(listener);
    if (index !== -1) listeners.splice(index, 1);
  }

  /** Aborts with `reason` and calls the listeners; later calls do nothing. */
  abort(reason: unknown): void {
    if (this.#aborted) return;
    this.#aborted = true;
    this.#reason = reason;
    const listeners = this.#listeners;
    this.#listeners = undefined;
    if (listeners === undefined) return;
    for (const listener of listeners) {
      try {
        listener();
      } catch (error) {
        // As an EventTarget does: one failing listener neither stops the others nor
        // unwinds into whoever aborted (a timer); it is reported as uncaught.
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }
}
