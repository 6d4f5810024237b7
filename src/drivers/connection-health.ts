/**
 * Whether a driver connection can still be used, and who hears when it can't.
 *
 * A connection breaks when the server closes it, the network fails, or a cancel leaves
 * its state unknown. If nobody is using it then, the `onBroken` listeners hear about it
 * (the pool evicts it instead of an unheard 'error' crashing the process); a busy
 * connection's own caller hears through its statement's rejection instead.
 */
export class ConnectionHealth {
  readonly #listeners: Array<(error: unknown) => void> = [];
  readonly #onOrphaned: () => void;
  #broken = false;
  /** True while a statement runs on the connection. */
  busy = false;

  /**
   * `onOrphaned` runs once if the connection breaks or is closed while a statement runs on
   * it: the server does not stop a statement because its client went away (not until it
   * next writes to it), so the driver stops it from outside (a cancel, a KILL).
   */
  constructor(onOrphaned: () => void = () => {}) {
    this.#onOrphaned = onOrphaned;
  }

  get broken(): boolean {
    return this.#broken;
  }

  onBroken(listener: (error: unknown) => void): void {
    this.#listeners.push(listener);
  }

  /** Marks the connection unusable; tells the listeners once, unless it is busy. */
  markBroken(error: unknown): void {
    if (this.#broken) return;
    this.#broken = true;
    const listeners = this.#listeners.splice(0);
    if (this.busy) this.#onOrphaned();
    else for (const listener of listeners) listener(error);
  }

  /** Marks the connection unusable without telling anyone: it is being closed on purpose. */
  retire(): void {
    const wasBroken = this.#broken;
    this.#broken = true;
    this.#listeners.length = 0;
    if (this.busy && !wasBroken) this.#onOrphaned();
  }
}
