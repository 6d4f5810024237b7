/**
 * The code each offload worker thread runs: imports the hosted module, opens one connection
 * with its `open`, then serves the host's batches of requests one request at a time, in
 * order, synchronously, replying to each as soon as it is done. Whatever the module throws
 * goes back as a `BlockingErrorShape` (name, message, code, errno only).
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { BlockingConnection, BlockingErrorShape, OpenBlockingConnection } from './blocking-driver.js';
import { type FailureStage, type HostBatch, type HostRequest, nextSequence, SLOT_COUNT, type WorkerReply, type WorkerStart } from './protocol.js';

const port = parentPort;
if (port === null) throw new Error('worker-entry is started by the offload host in a worker thread, not run directly.');

const DONE: WorkerReply = { kind: 'done' };
const SKIPPED: WorkerReply = { kind: 'skipped' };

/** Keeps what the host needs of a thrown value, and nothing that might not clone. */
function toShape(error: unknown): BlockingErrorShape {
  try {
    if (error !== null && typeof error === 'object') {
      const { name, message, code, errno } = error as { name?: unknown; message?: unknown; code?: unknown; errno?: unknown };
      const numericErrno = typeof errno === 'number' ? errno : typeof code === 'number' ? code : undefined;
      return {
        name: typeof name === 'string' ? name : 'Error',
        message: typeof message === 'string' ? message : '',
        ...(typeof code === 'string' ? { code } : {}),
        ...(numericErrno !== undefined ? { errno: numericErrno } : {}),
      };
    }
    return { name: typeof error, message: String(error) };
  } catch {
    // A getter that throws, a revoked proxy: describe it without its contents.
    return { name: 'Error', message: 'An error that could not be read was thrown.' };
  }
}

function fail(stage: FailureStage, error: unknown): WorkerReply {
  return { kind: 'failed', stage, error: toShape(error) };
}

function reply(message: WorkerReply): void {
  try {
    port!.postMessage(message);
  } catch (error) {
    // A result holding a function, a symbol, a class with private state: report it as the
    // statement's failure instead of leaving the host waiting.
    port!.postMessage({
      kind: 'failed',
      stage: 'request',
      error: {
        name: toShape(error).name,
        message: 'The result holds a value that cannot be passed between threads (structured clone failed).',
        code: 'ERR_OFFLOAD_RESULT_NOT_CLONEABLE',
      },
    } satisfies WorkerReply);
  }
}

function serve(connection: BlockingConnection, request: HostRequest): void {
  switch (request.kind) {
    case 'run': {
      let message: WorkerReply;
      try {
        const result = connection.run(request.sql, request.parameters);
        // Only the fields of the contract cross: a driver's extra properties stay here.
        message = {
          kind: 'result',
          rows: result.rows,
          columns: result.columns,
          affectedRows: result.affectedRows,
          insertId: result.insertId,
          inTransaction: result.inTransaction,
        };
      } catch (error) {
        message = fail('request', error);
      }
      reply(message);
      return;
    }
    case 'reset':
      try {
        connection.reset();
      } catch (error) {
        reply(fail('request', error));
        return;
      }
      reply(DONE);
      return;
    case 'ping':
      reply(DONE);
      return;
    case 'close':
      try {
        connection.close();
      } catch {
        // Closing is best effort: the thread ends either way.
      }
      // Ends the thread even if the module left a timer or handle behind.
      process.exit(0);
  }
}

async function main(): Promise<void> {
  const start = workerData as WorkerStart;
  let open: OpenBlockingConnection<unknown>;
  try {
    const hosted = (await import(start.module)) as { readonly open?: unknown };
    if (typeof hosted.open !== 'function') {
      throw Object.assign(new TypeError('The module does not export an `open` function.'), { code: 'ERR_OFFLOAD_NO_OPEN' });
    }
    open = hosted.open as OpenBlockingConnection<unknown>;
  } catch (error) {
    // No listener is left: the thread ends once this reply is sent.
    reply(fail('load', error));
    return;
  }
  let connection: BlockingConnection;
  try {
    connection = open(start.config);
  } catch (error) {
    reply(fail('open', error));
    return;
  }
  const slots = new Int32Array(start.slots);
  let seq = 0;
  port!.on('message', (batch: HostBatch) => {
    for (const request of batch) {
      if (request.kind === 'close') serve(connection, request);
      seq = nextSequence(seq);
      const slot = seq % SLOT_COUNT;
      // Started from here on, unless the host gave the request up first (see protocol.ts).
      if (Atomics.compareExchange(slots, slot, seq, -seq) !== seq) {
        reply(SKIPPED);
        continue;
      }
      serve(connection, request);
      // Done (its reply posted): the host no longer takes it for the running one. A swap,
      // not a store: once the reply is read, the host may already have given the slot to a
      // newer request, whose mark must stay.
      Atomics.compareExchange(slots, slot, -seq, 0);
    }
  });
  reply({ kind: 'opened' });
}

await main();
