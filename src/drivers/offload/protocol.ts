/**
 * The messages between the offload host (main thread) and one worker thread.
 *
 * Pipelined: the host sends requests without waiting for earlier replies, the calls made in
 * one event-loop turn together as one message (a batch, an array). The worker serves them
 * in order, one at a time, and posts one reply per request as soon as it is done (not one
 * per batch: a reply posted before the thread is terminated still arrives, so a statement
 * that completed always gets its real result).
 *
 * Each request has a sequence number, counted the same way on both sides (`nextSequence`,
 * from 0, one per request; `close` takes none). The number picks a slot of a shared
 * Int32Array (`slots`): the host writes `seq` there before sending; the worker swaps it for
 * `-seq` (Atomics.compareExchange) just before starting the request, and skips the request
 * (reply `skipped`) if the slot no longer holds `seq`, because the host swapped it for 0
 * first; once it has replied it swaps `-seq` for 0 (done). One atomic swap decides, without a
 * round trip, whether a request started: a call given up on before it started never runs,
 * after a thread is lost the host knows which calls never reached the database, and `-seq`
 * tells it which one is running (an abort of a call already done needs no termination).
 */
import type { BlockingErrorShape } from './blocking-driver.js';

/** Slots in the shared array: the most requests one worker has in flight at once. */
export const SLOT_COUNT = 1024;

/**
 * Sequence numbers run 1 .. 2^30 and wrap (0 marks a slot whose request is done or was given
 * up on). 2^30 is a multiple of SLOT_COUNT: consecutive numbers take consecutive slots even
 * across the wrap, so no two requests in flight share a slot.
 */
export function nextSequence(seq: number): number {
  return seq >= 0x40000000 ? 1 : seq + 1;
}

/** What the host hands a new worker as `workerData`. */
export interface WorkerStart {
  /** The hosted module's file URL (`href`), imported with `import()`. */
  readonly module: string;
  /** Handed to the module's `open`. */
  readonly config: unknown;
  /** `SLOT_COUNT` Int32 slots, shared with the host (see the module comment). */
  readonly slots: SharedArrayBuffer;
}

/** One request. */
export type HostRequest =
  | { readonly kind: 'run'; readonly sql: string; readonly parameters: readonly unknown[] }
  /** Runs the module's `reset()`. */
  | { readonly kind: 'reset' }
  /** Answers without touching the connection: proves the thread is alive and not blocked. */
  | { readonly kind: 'ping' }
  /** Closes the connection and ends the thread. No reply, no sequence number. */
  | { readonly kind: 'close' };

/** Host to worker: the requests of one event-loop turn, served in order. */
export type HostBatch = readonly HostRequest[];

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
  /** The host gave the request up before it started: it was not run. */
  | { readonly kind: 'skipped' }
  /** Something threw. After a `load` or `open` failure the worker ends. */
  | { readonly kind: 'failed'; readonly stage: FailureStage; readonly error: BlockingErrorShape };
