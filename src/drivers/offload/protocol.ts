/**
 * The messages between the offload host (main thread) and one worker thread.
 *
 * One request is in the worker at a time, and each gets exactly one reply, in order; the
 * host queues the rest. A statement is one `postMessage` each way: the request carries the
 * SQL and parameters, the reply the rows as arrays plus their column names. `close` gets no
 * reply: the worker closes its connection and exits, and the host hears the `exit` event.
 */
import type { BlockingErrorShape } from './blocking-driver.js';

/** What the host hands a new worker as `workerData`. */
export interface WorkerStart {
  /** The hosted module's file URL (`href`), imported with `import()`. */
  readonly module: string;
  /** Handed to the module's `open`. */
  readonly config: unknown;
}

/** Host to worker. */
export type HostRequest =
  | { readonly kind: 'run'; readonly sql: string; readonly parameters: readonly unknown[] }
  /** Runs the module's `reset()`. */
  | { readonly kind: 'reset' }
  /** Answers without touching the connection: proves the thread is alive and not blocked. */
  | { readonly kind: 'ping' }
  /** Closes the connection and ends the thread. No reply. */
  | { readonly kind: 'close' };

/** Where a worker failed: loading the module, opening the connection, or serving a request. */
export type FailureStage = 'load' | 'open' | 'request';

/** Worker to host. */
export type WorkerReply =
  /** The connection is open: the first reply of a worker that started well. */
  | { readonly kind: 'opened' }
  /** A statement's outcome (see `BlockingResult`). */
  | {
      readonly kind: 'result';
      readonly rows: unknown[][];
      readonly columns: string[];
      readonly affectedRows: bigint | number | undefined;
      readonly insertId: bigint | number | undefined;
      readonly inTransaction: boolean | undefined;
    }
  /** A `reset` or `ping` finished. */
  | { readonly kind: 'done' }
  /** Something threw. After a `load` or `open` failure the worker ends. */
  | { readonly kind: 'failed'; readonly stage: FailureStage; readonly error: BlockingErrorShape };
