/**
 * The contract for a *blocking* driver hosted by sluice's offload host.
 *
 * A blocking driver (better-sqlite3, a synchronous embedded store, a CPU-bound library) is
 * a module loaded inside a worker thread. Each worker opens one connection with it and
 * runs one statement at a time, synchronously: the worker blocks, the event loop of the
 * main thread never does. A module that wants to be hosted exports `open`:
 *
 * ```ts
 * // my-driver.ts
 * import type { OpenBlockingConnection } from 'sluice';
 * export const open: OpenBlockingConnection<{ path: string }> = (config) => ({ run, close });
 * ```
 *
 * Everything that crosses the thread boundary (the config, parameters, rows, error fields)
 * must survive the structured clone: plain objects, arrays, strings, numbers, bigints,
 * booleans, null, Uint8Array/Buffer (arrives as Uint8Array), Date.
 */

/** The outcome of one statement, as a blocking driver reports it. */
export interface BlockingResult {
  /**
   * The rows, as arrays of values in `columns` order (cheaper to clone than one object per
   * row: the column names cross the thread boundary once per result, not once per row).
   * Empty for a statement that returns none.
   */
  readonly rows: unknown[][];
  /** The column names of `rows`; empty when the statement returns no rows. */
  readonly columns: string[];
  /** Rows changed by INSERT/UPDATE/DELETE, when the driver knows. */
  readonly affectedRows?: bigint | number | undefined;
  /** The id the last INSERT generated, when the driver knows. */
  readonly insertId?: bigint | number | undefined;
  /**
   * Whether a transaction is open after the statement, when the driver knows: the host then
   * skips the `reset()` round trip for a connection that is clean.
   */
  readonly inTransaction?: boolean | undefined;
}

/**
 * An error as a blocking driver reports it. Thrown values are turned into this shape in the
 * worker (their `name`, `message`, `code` and `errno` kept); the host gives it back to the
 * main-thread driver, which translates it into a `SluiceError`.
 */
export interface BlockingErrorShape {
  readonly name: string;
  readonly message: string;
  /** A driver's error code (better-sqlite3: `SQLITE_CONSTRAINT_UNIQUE`). */
  readonly code?: string | undefined;
  readonly errno?: number | undefined;
}

/** One open connection inside a worker. Its calls block the worker, never the main thread. */
export interface BlockingConnection {
  /** Runs one statement with bound parameters. Throws on failure. */
  run(sql: string, parameters: readonly unknown[]): BlockingResult;
  /** Makes the connection clean for its next user: rolls back a transaction left open. */
  reset(): void;
  /** Closes the connection. Called once, before the worker exits on a polite shutdown. */
  close(): void;
}

/** What a hosted module exports as `open`: opens one connection from a cloneable config. */
export type OpenBlockingConnection<Config> = (config: Config) => BlockingConnection;
