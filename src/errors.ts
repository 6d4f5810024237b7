/**
 * The root of every error sluice throws to a user.
 *
 * Catch `SluiceError` to catch anything sluice raised, and switch on `code`, which is
 * stable across releases (messages are not: they are written for people). When sluice
 * wraps an error from a factory or a driver, the original is kept as `cause`.
 *
 * Messages never carry a password or a connection string: when a wrapped error's own
 * message might (a user factory can put anything there), sluice names it by its `code`
 * or class only, and the full error stays reachable as `cause`.
 */
export class SluiceError extends Error {
  /** A stable, machine-readable identifier, e.g. `POOL_TIMEOUT`. */
  readonly code: string;

  constructor(code: string, message: string, options?: { readonly cause?: unknown }) {
    super(message, options);
    this.code = code;
  }

  override get name(): string {
    return this.constructor.name;
  }
}

/** Thrown synchronously when an option or argument is out of range or of the wrong type. */
export class InvalidOptionError extends SluiceError {
  /** The option or argument that was rejected, e.g. `max` or `timeoutMs`. */
  readonly option: string;

  constructor(option: string, message: string) {
    super('INVALID_OPTION', `Invalid ${option}: ${message}`);
    this.option = option;
  }
}

/**
 * Names an arbitrary thrown value without quoting its message: `ECONNREFUSED`,
 * `TypeError`, `string`. Used where a message must not echo text that could hold secrets.
 */
export function describeError(error: unknown): string {
  if (error !== null && typeof error === 'object') {
    const code = (error as { readonly code?: unknown }).code;
    if (typeof code === 'string' && code.length > 0 && code.length <= 64) return code;
    if (typeof code === 'number') return String(code);
    if (error instanceof Error) return error.name;
    return 'object';
  }
  return typeof error;
}
