/**
 * Concurrent misses for one key in this process share one database query: the first caller
 * runs it, those arriving while it runs wait for its outcome. Per process only: other
 * processes run their own.
 */
export class SingleFlight<T> {
  readonly #flights = new Map<string, Promise<T>>();

  /** The flight in progress for `key`, if any. */
  joinable(key: string): Promise<T> | undefined {
    return this.#flights.get(key);
  }

  /** Runs `work` as the flight for `key`, forgotten once it settles (an outcome is never kept). */
  run(key: string, work: () => Promise<T>): Promise<T> {
    const flight = work();
    this.#flights.set(key, flight);
    const forget = (): void => {
      if (this.#flights.get(key) === flight) this.#flights.delete(key);
    };
    flight.then(forget, forget);
    return flight;
  }

  /** Flights in progress. */
  get size(): number {
    return this.#flights.size;
  }
}
