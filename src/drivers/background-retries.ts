/** Between two tries, the delay doubles up to this... */
const MAX_DELAY_MS = 5_000;
/** ...and tries stop after this long: an outage longer than a minute is not ridden out. */
const BUDGET_MS = 60_000;

/**
 * Cleanup that must reach the server even across a network outage: a cancel or a KILL for a
 * statement whose client connection was lost, which the server would otherwise run to its
 * end. Each job is tried again in the background, backing off, until it is delivered, the
 * budget runs out, or `stop()` (the driver closes). Timers never keep the process alive.
 */
export class BackgroundRetries {
  readonly #timers = new Set<ReturnType<typeof setTimeout>>();
  #stopped = false;

  /**
   * Tries `attempt` after `firstDelayMs`, then again with a doubling delay while it resolves
   * `false`. `attempt` must not reject.
   */
  retry(attempt: () => Promise<boolean>, firstDelayMs: number): void {
    // At least a few tries, however long each one may take.
    this.#schedule(attempt, firstDelayMs, Date.now() + Math.max(BUDGET_MS, 8 * firstDelayMs));
  }

  /** Cancels every pending try. */
  stop(): void {
    this.#stopped = true;
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
  }

  #schedule(attempt: () => Promise<boolean>, delayMs: number, giveUpAt: number): void {
    if (this.#stopped || Date.now() + delayMs > giveUpAt) return;
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      void attempt().then((delivered) => {
        if (!delivered) this.#schedule(attempt, Math.min(2 * delayMs, MAX_DELAY_MS), giveUpAt);
      });
    }, delayMs);
    timer.unref();
    this.#timers.add(timer);
  }
}
