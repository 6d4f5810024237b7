/**
 * The offload host: runs a *blocking* driver module (see `blocking-driver.ts`) in worker
 * threads, one connection per thread, and presents each thread as an async
 * `DriverConnection` that takes concurrent calls (pipelined, batched per event-loop turn).
 * The main event loop never waits on the driver.
 *
 * A statement past its deadline (or aborted) cannot be interrupted inside a native call, so
 * its thread is terminated: the call rejects with `signal.reason` at once, the connection
 * reports itself broken (the pool replaces it), and `exited` settles when the thread is
 * really gone (V8's termination lands when the native call returns to JavaScript).
 */
import { createRequire } from 'node:module';
import { isAbsolute } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker, type ResourceLimits } from 'node:worker_threads';
import { InvalidOptionError, SluiceError, describeError } from '../../errors.js';
import { checkMilliseconds } from '../../pool/options.js';
import { ConnectionHealth } from '../connection-health.js';
import type { CancelSignal, DriverConnection, RunOptions, StatementResult } from '../driver.js';
import { ConnectionError, ConnectionLostError, NotStartedError } from '../errors.js';
import type { BlockingErrorShape } from './blocking-driver.js';
import { type HostBatch, type HostRequest, nextSequence, SLOT_COUNT, type WorkerReply, type WorkerStart } from './protocol.js';

export interface OffloadWorkerOptions<Config> {
  /** The hosted module: a file URL (or absolute path) of a module exporting `open: OpenBlockingConnection<Config>`. */
  readonly module: URL | string;
  /** Handed to `open` inside the worker; must survive the structured clone. */
  readonly config: Config;
  /** Turns a blocking driver's error (as BlockingErrorShape) into a SluiceError, on the main thread. */
  readonly translateError: (error: BlockingErrorShape) => SluiceError;
  /** A short label for messages and the thread name, e.g. 'sqlite'. */
  readonly name: string;
  /** Optional worker resource limits (node's ResourceLimits). */
  readonly resourceLimits?: ResourceLimits;
  /**
   * How long `close()` lets the module close its connection before the thread is
   * terminated. Default 2 s.
   */
  readonly closeGraceMs?: number;
}

/**
 * A connection whose blocking driver runs in a worker thread of its own. Unlike other
 * driver connections it takes concurrent calls: they are pipelined to the worker, which
 * runs them one at a time in the order they were made.
 */
export interface OffloadedConnection extends DriverConnection {
  /** Settles (never rejects) once the worker thread has exited, whatever the cause. */
  readonly exited: Promise<void>;
  /** Calls whose callers still wait (queued, sent, or running). */
  readonly inFlight: number;
}

/**
 * The hosted module could not be loaded in the worker (not found, a syntax error, no `open`
 * export). `permanent`: starting another worker cannot help, so the pool fails fast.
 */
export class OffloadModuleError extends SluiceError {
  readonly permanent = true;

  constructor(message: string, options: { readonly cause: unknown }) {
    super('OFFLOAD_MODULE_FAILED', message, options);
  }
}

/**
 * Starts one worker thread and opens one connection in it; honours `signal` (abort =>
 * worker terminated, rejects with signal.reason). A failure of `open` rejects with
 * translateError(...) (so e.g. a SQLite file that cannot be opened gives the SQLite driver's
 * own typed error).
 */
export function startOffloadedConnection<Config>(
  options: OffloadWorkerOptions<Config>,
  connect: { readonly signal: AbortSignal },
): Promise<OffloadedConnection> {
  const signal = connect.signal;
  let start: WorkerStart;
  let closeGraceMs: number;
  try {
    if (typeof options.translateError !== 'function') {
      throw new InvalidOptionError('translateError', 'expected a function that turns a BlockingErrorShape into a SluiceError.');
    }
    if (typeof options.name !== 'string') throw new InvalidOptionError('name', 'expected a short label such as sqlite.');
    closeGraceMs = checkMilliseconds('closeGraceMs', options.closeGraceMs, 2_000);
    start = { module: moduleHref(options.module), config: options.config, slots: new SharedArrayBuffer(SLOT_COUNT * Int32Array.BYTES_PER_ELEMENT) };
  } catch (error) {
    return Promise.reject(error);
  }
  if (signal.aborted) return Promise.reject(signal.reason);

  let worker: Worker;
  try {
    const { script, eval: isCode } = workerScript();
    worker = new Worker(script, {
      eval: isCode,
      workerData: start,
      name: `sluice ${options.name}`,
      ...(options.resourceLimits !== undefined ? { resourceLimits: options.resourceLimits } : {}),
    });
  } catch (error) {
    if ((error as { readonly name?: unknown } | null)?.name === 'DataCloneError') {
      return Promise.reject(
        new InvalidOptionError(
          'config',
          'cannot be passed to a worker thread: it must survive the structured clone (plain objects, arrays, strings, numbers, bigints, booleans, null, Uint8Array, Date; no functions or class instances with private state).',
        ),
      );
    }
    return Promise.reject(
      new ConnectionError('CONNECTION_FAILED', `The ${options.name} worker thread could not start (${describeError(error)}).`, { cause: error }),
    );
  }
  return new WorkerConnection(worker, start.slots, options.name, options.translateError, closeGraceMs).opened(signal);
}

// --- Where the worker's code is, and how it loads -------------------------------------------

/** True when this file runs as TypeScript source (vitest, tsx), false from `dist`. */
const FROM_TYPESCRIPT = import.meta.url.endsWith('.ts');
/** The worker's entry, beside this file with the same extension. */
const WORKER_ENTRY = new URL(FROM_TYPESCRIPT ? './worker-entry.ts' : './worker-entry.js', import.meta.url);

let typescriptBootstrap: string | undefined;

/**
 * From `dist`, the worker runs `worker-entry.js` (it inherits the process's flags). From
 * TypeScript sources it runs a two-line bootstrap that registers tsx's loader in the worker,
 * then imports `worker-entry.ts`; the hosted module may then be `.ts` too. (On Node 20 a
 * worker started with `execArgv: ['--import', 'tsx']` still fails on `.ts`: tsx registers its
 * hooks on the main thread only, and a worker needs them registered in itself.)
 */
function workerScript(): { readonly script: URL | string; readonly eval: boolean } {
  if (!FROM_TYPESCRIPT) return { script: WORKER_ENTRY, eval: false };
  typescriptBootstrap ??= [
    `import(${JSON.stringify(tsxApi())})`,
    `.then(({ register }) => { register(); return import(${JSON.stringify(WORKER_ENTRY.href)}); });`,
  ].join('');
  return { script: typescriptBootstrap, eval: true };
}

/** The URL of tsx's ESM API (a devDependency: only TypeScript sources need it). */
function tsxApi(): string {
  try {
    return import.meta.resolve('tsx/esm/api');
  } catch {
    // The CommonJS twin sits beside the ESM file the `import` condition names.
    return pathToFileURL(createRequire(import.meta.url).resolve('tsx/esm/api').replace(/\.cjs$/, '.mjs')).href;
  }
}

function moduleHref(module: URL | string): string {
  if (module instanceof URL) return module.href;
  if (typeof module === 'string') {
    if (isAbsolute(module)) return pathToFileURL(module).href;
    if (/^[a-z][a-z0-9+.-]+:/i.test(module)) return module;
  }
  throw new InvalidOptionError('module', 'expected a file URL or an absolute path of a module exporting `open`.');
}

// --- One worker, one connection, pipelined ----------------------------------------------------

type CallKind = 'run' | 'reset' | 'ping';

/** One request and its caller, from submission until its promise settles. */
class Call {
  resolve: (value: unknown) => void = noop;
  reject: (error: unknown) => void = noop;
  readonly kind: CallKind;
  readonly request: HostRequest;
  readonly signal: CancelSignal | undefined;
  /** Its sequence number once sent (see protocol.ts); 0 while it waits in the outbox. */
  seq = 0;
  /** Its caller has its answer; a reply still due for it is dropped. */
  settled = false;

  constructor(kind: CallKind, request: HostRequest, signal: CancelSignal | undefined) {
    this.kind = kind;
    this.request = request;
    this.signal = signal;
  }
}

/** The worker's first message, awaited by `opened()`. */
interface Opening {
  readonly resolve: (connection: OffloadedConnection) => void;
  readonly reject: (error: unknown) => void;
  readonly signal: AbortSignal;
  readonly onAbort: () => void;
}

/** Listening to one signal, for however many pending calls share it (a deadline scope's do). */
interface SignalListener {
  readonly listener: () => void;
  calls: number;
}

function noop(): void {}

const RESET: HostRequest = { kind: 'reset' };
const PING: HostRequest = { kind: 'ping' };
const CLOSE_BATCH: HostBatch = [{ kind: 'close' }];
const RESOLVED = Promise.resolve();
const UNDESERIALIZABLE: WorkerReply = {
  kind: 'failed',
  stage: 'request',
  error: {
    name: 'DataCloneError',
    message: 'A reply from the worker thread could not be deserialized.',
    code: 'ERR_OFFLOAD_REPLY_NOT_DESERIALIZABLE',
  },
};

/**
 * Calls are pipelined: a call is sent as soon as it is made when the worker is idle, else
 * with the other calls of the same event-loop turn as one batch (one `postMessage`, flushed
 * by `setImmediate`), without waiting for earlier replies. The worker runs them in order and
 * replies to each. When the thread is terminated (a deadline, an abort) or dies, a call that
 * completed gets its real result (replies posted before the thread ended arrive before its
 * `exit` event), the one running rejects (with its signal's reason if it was the abandoned
 * one, else CONNECTION_LOST), and those that never started reject with NOT_STARTED.
 */
class WorkerConnection implements OffloadedConnection {
  readonly exited: Promise<void>;
  readonly #worker: Worker;
  readonly #name: string;
  readonly #translateError: (error: BlockingErrorShape) => SluiceError;
  readonly #closeGraceMs: number;
  /** Shared with the worker: who started what (see protocol.ts). */
  readonly #slots: Int32Array;
  /** A statement orphaned by a break (a failed reset) stops with its thread. */
  readonly #health = new ConnectionHealth(() => this.#lose(this.#lostError('its connection broke while statements ran on it', undefined)));
  readonly #listeners = new Map<CancelSignal, SignalListener>();
  #opening: Opening | undefined;
  /** Calls made this turn, not sent yet. */
  #outbox: Call[] = [];
  /** Calls sent, in order, each waiting for its reply (some already settled). */
  #inFlight: Call[] = [];
  /** Calls whose callers wait. */
  #active = 0;
  #seq = 0;
  #flush: ReturnType<typeof setImmediate> | undefined;
  /** False only when the last result said no transaction is open: `reset()` then stays here. */
  #mayBeInTransaction = false;
  #closing = false;
  /** Set once the thread is going away: what the calls still running will hear at its exit. */
  #lost: ConnectionLostError | undefined;
  /** The thread exited. */
  #gone = false;
  #graceTimer: ReturnType<typeof setTimeout> | undefined;
  #markExited: () => void = noop;

  constructor(worker: Worker, slots: SharedArrayBuffer, name: string, translateError: (error: BlockingErrorShape) => SluiceError, closeGraceMs: number) {
    this.#worker = worker;
    this.#slots = new Int32Array(slots);
    this.#name = name;
    this.#translateError = translateError;
    this.#closeGraceMs = closeGraceMs;
    this.exited = new Promise((resolve) => (this.#markExited = resolve));
    worker.on('message', (reply: WorkerReply) => this.#onReply(reply));
    worker.on('messageerror', () => this.#onReply(UNDESERIALIZABLE));
    // 'error' (an uncaught exception, out of memory) comes before 'exit', with the reason.
    worker.on('error', (error) => this.#onThreadFailed(error, undefined));
    worker.on('exit', (exitCode) => this.#onExit(exitCode));
  }

  /** Resolves with this connection once the worker reports its connection open. */
  opened(signal: AbortSignal): Promise<OffloadedConnection> {
    return new Promise<OffloadedConnection>((resolve, reject) => {
      const onAbort = (): void => {
        const opening = this.#opening;
        if (opening === undefined) return;
        this.#opening = undefined;
        this.#closing = true;
        this.#health.retire();
        this.#terminate();
        opening.reject(signal.reason);
      };
      this.#opening = { resolve, reject, signal, onAbort };
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  get broken(): boolean {
    return this.#health.broken;
  }

  onBroken(listener: (error: unknown) => void): void {
    this.#health.onBroken(listener);
  }

  run<Row = Record<string, unknown>>(sql: string, parameters: readonly unknown[], options?: RunOptions): Promise<StatementResult<Row>> {
    const signal = options?.signal;
    if (signal !== undefined && signal.aborted) return Promise.reject(signal.reason);
    if (this.#health.broken) return Promise.reject(this.#closedError());
    return this.#submit('run', { kind: 'run', sql, parameters }, signal) as Promise<StatementResult<Row>>;
  }

  /** Proves the thread answers (it is alive and not blocked); does not touch the connection. */
  ping(options?: RunOptions): Promise<void> {
    const signal = options?.signal;
    if (signal !== undefined && signal.aborted) return Promise.reject(signal.reason);
    if (this.#health.broken) return Promise.reject(this.#closedError());
    return this.#submit('ping', PING, signal) as Promise<void>;
  }

  /** Runs the module's `reset()` in the worker, unless the last result said no transaction is open. */
  reset(): Promise<void> {
    if (this.#health.broken) return RESOLVED;
    if (!this.#mayBeInTransaction && this.#active === 0) return RESOLVED;
    return this.#submit('reset', RESET, undefined) as Promise<void>;
  }

  /** Calls sent or about to be, whose callers wait: what a scheduler balances on. */
  get inFlight(): number {
    return this.#active;
  }

  /**
   * Asks the worker to close its connection and exit; terminates it after `closeGraceMs`
   * (at once if statements are pending: they would hold the close up). Resolves when the
   * thread is gone. Never rejects.
   */
  close(): Promise<void> {
    if (this.#closing) return this.exited;
    this.#closing = true;
    this.#health.retire();
    if (this.#active > 0) {
      this.#lose(new ConnectionLostError(`The ${this.#name} connection was closed while a statement ran on it.`, { cause: undefined }));
    } else if (!this.#gone && this.#lost === undefined) {
      this.#worker.postMessage(CLOSE_BATCH);
      this.#graceTimer = setTimeout(() => this.#terminate(), this.#closeGraceMs);
      this.#graceTimer.unref();
    }
    return this.exited;
  }

  // --- Calls ------------------------------------------------------------------------------

  #submit(kind: CallKind, request: HostRequest, signal: CancelSignal | undefined): Promise<unknown> {
    const call = new Call(kind, request, signal);
    const promise = new Promise<unknown>((resolve, reject) => {
      call.resolve = resolve;
      call.reject = reject;
    });
    if (signal !== undefined) this.#listen(signal);
    this.#active++;
    this.#health.busy = true;
    if (this.#inFlight.length === 0 && this.#outbox.length === 0) {
      // The worker is idle: nothing to wait for, nothing to batch with.
      this.#send([call]);
    } else {
      // The worker is busy: the calls of this turn go together.
      this.#outbox.push(call);
      this.#flush ??= setImmediate(this.#flushOutbox);
    }
    return promise;
  }

  readonly #flushOutbox = (): void => {
    this.#flush = undefined;
    if (this.#lost !== undefined) return;
    const room = SLOT_COUNT - this.#inFlight.length;
    if (room <= 0 || this.#outbox.length === 0) return;
    const calls = this.#outbox.length <= room ? this.#outbox : this.#outbox.slice(0, room);
    this.#outbox = this.#outbox.length <= room ? [] : this.#outbox.slice(room);
    this.#send(calls);
  };

  /** Numbers the calls, marks their slots pending, and posts them as one batch. */
  #send(calls: Call[]): void {
    const slots = this.#slots;
    const requests = new Array<HostRequest>(calls.length);
    let seq = this.#seq;
    for (let i = 0; i < calls.length; i++) {
      const call = calls[i]!;
      seq = nextSequence(seq);
      call.seq = seq;
      Atomics.store(slots, seq % SLOT_COUNT, seq);
      requests[i] = call.request;
    }
    try {
      this.#worker.postMessage(requests);
    } catch (error) {
      // Nothing was sent. Find the call that cannot be cloned: send the others one by one.
      for (const call of calls) call.seq = 0;
      if (calls.length === 1) this.#settle(calls[0]!).reject(notCloneable(calls[0]!.request, error));
      else for (const call of calls) this.#send([call]);
      return;
    }
    this.#seq = seq;
    for (const call of calls) this.#inFlight.push(call);
  }

  /** The caller of `call` gets its answer now (returned: call `.resolve` or `.reject` on it). */
  #settle(call: Call): Call {
    call.settled = true;
    this.#active--;
    this.#health.busy = this.#active > 0;
    if (call.signal !== undefined) this.#unlisten(call.signal);
    return call;
  }

  #listen(signal: CancelSignal): void {
    const known = this.#listeners.get(signal);
    if (known !== undefined) {
      known.calls++;
      return;
    }
    const listener = (): void => this.#aborted(signal);
    this.#listeners.set(signal, { listener, calls: 1 });
    signal.addEventListener('abort', listener, { once: true });
  }

  #unlisten(signal: CancelSignal): void {
    const known = this.#listeners.get(signal);
    if (known === undefined || --known.calls > 0) return;
    this.#listeners.delete(signal);
    signal.removeEventListener('abort', known.listener);
  }

  #onReply(reply: WorkerReply): void {
    if (this.#opening !== undefined) {
      this.#onOpenReply(this.#opening, reply);
      return;
    }
    const call = this.#inFlight.shift();
    if (call === undefined) return;
    if (this.#outbox.length > 0 && this.#flush === undefined) this.#flush = setImmediate(this.#flushOutbox);
    switch (reply.kind) {
      case 'result': {
        this.#mayBeInTransaction = reply.inTransaction ?? true;
        if (call.settled) return;
        const result: StatementResult<Record<string, unknown>> = {
          rows: toObjects(reply.columns, reply.rows),
          affectedRows: toBigInt(reply.affectedRows),
          insertId: toBigInt(reply.insertId),
        };
        this.#settle(call).resolve(result);
        return;
      }
      case 'done':
        if (call.kind === 'reset') this.#mayBeInTransaction = false;
        if (!call.settled) this.#settle(call).resolve(undefined);
        return;
      case 'skipped':
        // Only calls given up on are skipped, and they are settled already.
        if (!call.settled) this.#settle(call).reject(this.#notStarted(undefined));
        return;
      case 'opened':
        return;
      case 'failed': {
        // The driver does not say whether a failed statement left a transaction open.
        this.#mayBeInTransaction = true;
        const error = this.#translate(reply.error);
        // A connection that cannot be reset cannot be trusted.
        if (call.kind === 'reset') this.#health.markBroken(error);
        if (!call.settled) this.#settle(call).reject(error);
        return;
      }
    }
  }

  #onOpenReply(opening: Opening, reply: WorkerReply): void {
    this.#opening = undefined;
    opening.signal.removeEventListener('abort', opening.onAbort);
    if (reply.kind === 'opened') {
      opening.resolve(this);
      return;
    }
    // The worker ends by itself after a failed start; terminate makes sure of it.
    this.#health.retire();
    this.#closing = true;
    this.#terminate();
    if (reply.kind !== 'failed') {
      opening.reject(new ConnectionError('CONNECTION_FAILED', `The ${this.#name} worker thread answered out of turn while opening.`, { cause: reply }));
      return;
    }
    opening.reject(
      reply.stage === 'load'
        ? new OffloadModuleError(
            `The ${this.#name} driver module could not be loaded in a worker thread (${reply.error.code ?? reply.error.name}): ${reply.error.message}`,
            { cause: reply.error },
          )
        : this.#translate(reply.error),
    );
  }

  #translate(shape: BlockingErrorShape): SluiceError {
    try {
      const error = this.#translateError(shape);
      if (error instanceof SluiceError) return error;
    } catch {
      // A translator that fails must not leave the caller without a SluiceError.
    }
    return new SluiceError('QUERY_FAILED', `The ${this.#name} driver failed (${shape.code ?? shape.name}).`, { cause: shape });
  }

  /**
   * Gives the call up if it has not started: in the outbox, or in the worker's queue (its
   * slot swapped to 0 before the worker swapped it to started). True if so.
   */
  #withdraw(call: Call): boolean {
    if (call.seq === 0) {
      const index = this.#outbox.indexOf(call);
      if (index !== -1) this.#outbox.splice(index, 1);
      return true;
    }
    return Atomics.compareExchange(this.#slots, call.seq % SLOT_COUNT, call.seq, 0) === call.seq;
  }

  /** A signal of pending calls aborted (their deadline passed, or their caller gave up). */
  #aborted(signal: CancelSignal): void {
    const known = this.#listeners.get(signal);
    if (known !== undefined) {
      this.#listeners.delete(signal);
      signal.removeEventListener('abort', known.listener);
    }
    const reason: unknown = signal.reason;
    const abandoned: Call[] = [];
    let running = false;
    for (const call of [...this.#outbox, ...this.#inFlight]) {
      if (call.settled || call.signal !== signal) continue;
      // Not started: it never will. Started and done: its reply is on the way, dropped.
      // Still running, perhaps inside a native call nothing can interrupt: end the thread.
      if (!this.#withdraw(call) && Atomics.load(this.#slots, call.seq % SLOT_COUNT) === -call.seq) running = true;
      call.settled = true;
      abandoned.push(call);
    }
    if (running) {
      // While the abandoned calls still count as busy: their callers hear, not onBroken.
      this.#lose(
        new ConnectionLostError(
          `A ${this.#name} statement was abandoned (its deadline passed or it was aborted), so its worker thread was terminated.`,
          { cause: reason },
        ),
      );
    }
    this.#active -= abandoned.length;
    this.#health.busy = this.#active > 0;
    for (const call of abandoned) call.reject(reason);
  }

  /**
   * The thread is going away (terminated here, or it failed): calls that never started
   * reject with NOT_STARTED now; those that started wait for their replies, or for the
   * thread's exit, which rejects the one still running with `lost`.
   */
  #lose(lost: ConnectionLostError): void {
    if (this.#lost !== undefined) return;
    this.#lost = lost;
    // Idle: the onBroken listeners hear it (the pool evicts). Busy: the callers hear below.
    this.#health.markBroken(lost);
    this.#terminate();
    if (this.#flush !== undefined) clearImmediate(this.#flush);
    this.#flush = undefined;
    const notStarted = this.#notStarted(lost);
    for (const call of this.#outbox.splice(0)) if (!call.settled) this.#settle(call).reject(notStarted);
    for (const call of this.#inFlight) {
      if (!call.settled && this.#withdraw(call)) this.#settle(call).reject(notStarted);
    }
  }

  #onThreadFailed(error: unknown, exitCode: number | undefined): void {
    if (this.#opening !== undefined) {
      const opening = this.#opening;
      this.#opening = undefined;
      opening.signal.removeEventListener('abort', opening.onAbort);
      this.#health.retire();
      this.#closing = true;
      opening.reject(
        new ConnectionError('CONNECTION_FAILED', `The ${this.#name} worker thread exited before its connection opened (${describeExit(error, exitCode)}).`, {
          cause: error,
        }),
      );
      return;
    }
    this.#lose(this.#lostError(describeExit(error, exitCode), error));
  }

  /** The thread is gone, its replies all delivered: whatever still waits was running. */
  #onExit(exitCode: number): void {
    clearTimeout(this.#graceTimer);
    if (!this.#gone) {
      this.#gone = true;
      if (this.#lost === undefined && !(this.#closing && this.#active === 0)) this.#onThreadFailed(undefined, exitCode);
      const lost = this.#lost ?? this.#closedError();
      for (const call of this.#inFlight.splice(0)) if (!call.settled) this.#settle(call).reject(lost);
      for (const call of this.#outbox.splice(0)) if (!call.settled) this.#settle(call).reject(this.#notStarted(lost));
    }
    this.#markExited();
  }

  #lostError(why: string, cause: unknown): ConnectionLostError {
    return new ConnectionLostError(`The ${this.#name} worker thread exited (${why}); its connection is lost.`, { cause });
  }

  #notStarted(cause: unknown): NotStartedError {
    return new NotStartedError(
      `The ${this.#name} statement never started: its worker thread was lost first. It did not reach the database, so it is safe to retry.`,
      { cause },
    );
  }

  #terminate(): void {
    // Resolves when the thread is gone; `exited` reports that.
    void this.#worker.terminate();
  }

  #closedError(): ConnectionLostError {
    return new ConnectionLostError(`The ${this.#name} connection is closed.`, { cause: undefined });
  }
}

/**
 * Rows as plain objects keyed by column. The worker sends arrays plus the column names once:
 * measured on Node 20 (6 columns: int, two strings, float, text date, int), the main thread
 * spends per statement
 *   1 row:     arrays + building objects 2.1 us, objects cloned 1.9 us (a tie within noise);
 *   1000 rows: arrays + building objects 340 us, objects cloned 610 us; end to end through a
 *              worker, main-thread active time 355-420 us vs 735-760 us.
 * Structured clone writes each key of each object; the arrays carry only the values.
 */
function toObjects(columns: string[], rows: unknown[][]): Record<string, unknown>[] {
  const count = rows.length;
  if (count === 0) return rows as unknown as Record<string, unknown>[];
  const width = columns.length;
  // Assigning a `__proto__` key would set the prototype: define it as a property instead.
  if (columns.includes('__proto__')) return toObjectsDefined(columns, rows);
  const objects = new Array<Record<string, unknown>>(count);
  for (let i = 0; i < count; i++) {
    const row = rows[i]!;
    const object: Record<string, unknown> = {};
    for (let j = 0; j < width; j++) object[columns[j]!] = row[j];
    objects[i] = object;
  }
  return objects;
}

function toObjectsDefined(columns: string[], rows: unknown[][]): Record<string, unknown>[] {
  return rows.map((row) => {
    const object: Record<string, unknown> = {};
    columns.forEach((column, j) => Object.defineProperty(object, column, { value: row[j], writable: true, enumerable: true, configurable: true }));
    return object;
  });
}

function toBigInt(value: bigint | number | undefined): bigint | undefined {
  if (typeof value === 'bigint') return value;
  return typeof value === 'number' && Number.isInteger(value) ? BigInt(value) : undefined;
}

/** Why a thread ended, without quoting text a hosted module wrote (it might hold secrets). */
function describeExit(error: unknown, exitCode: number | undefined): string {
  if (error === undefined) return `exit code ${exitCode ?? 'unknown'}`;
  const code = (error as { readonly code?: unknown } | null)?.code;
  // Node's own reasons (ERR_WORKER_OUT_OF_MEMORY, ...) are safe to quote.
  if (typeof code === 'string' && code.startsWith('ERR_WORKER_') && error instanceof Error) return `${error.message} (${code})`;
  return `an uncaught ${describeError(error)} was thrown in it`;
}

function notCloneable(request: HostRequest, error: unknown): SluiceError {
  if (request.kind === 'run') {
    const index = request.parameters.findIndex((value) => {
      try {
        structuredClone(value);
        return false;
      } catch {
        return true;
      }
    });
    if (index !== -1) {
      return new InvalidOptionError(
        'parameters',
        `parameter ${index + 1} (${describeValue(request.parameters[index])}) cannot be passed to a worker thread: it must survive the structured clone (no functions, symbols or class instances with private state).`,
      );
    }
  }
  return new SluiceError('QUERY_FAILED', `A request could not be passed to the worker thread (${describeError(error)}).`, { cause: error });
}

function describeValue(value: unknown): string {
  if (value === null || typeof value !== 'object') return `a ${typeof value}`;
  const name = (value as { readonly constructor?: { readonly name?: unknown } }).constructor?.name;
  return typeof name === 'string' && name.length > 0 ? `a ${name}` : 'an object';
}
