import type { Connection, QueryValues } from 'mysql2';

/**
 * How a streamed statement ended: `result` holds the status flags of its last OK packet
 * when it ended with one (a CALL), undefined when it ended with a result set (whose EOF
 * mysql2 does not report); or the error it failed with.
 */
export type StreamOutcome =
  | { readonly ok: true; readonly result: number | undefined }
  | { readonly ok: false; readonly error: unknown };

/** What `RowStream.next()` gives: a chunk of rows, the end, or the error the statement failed with. */
export type StreamStep<Row> =
  | { readonly kind: 'rows'; readonly rows: Row[] }
  | { readonly kind: 'end' }
  | { readonly kind: 'error'; readonly error: unknown };

/**
 * One text query read row by row from a mysql2 connection, at the pace its consumer takes
 * the rows: once `chunkSize` rows wait to be taken, the connection is paused (mysql2 then
 * stops parsing and keeps the packets already received as they are; the socket stops
 * reading, so the server blocks on a full socket) and resumed when they are taken. At most
 * one chunk waits besides the one being consumed, plus the unparsed rest of the last socket
 * read (64 kB), whatever the size of the result.
 *
 * Only the first result set's rows are given (as `run()` gives only it); a CALL's other
 * results are read and dropped. It never rejects, and it knows nothing of signals: the
 * connection that uses it stops the statement on the server when asked to.
 */
export class RowStream<Row> {
  /** Settles once the statement is over on the wire (ended, failed, or its connection died). */
  readonly done: Promise<StreamOutcome>;
  readonly #connection: Connection;
  readonly #chunkSize: number;
  readonly #onEnd: (outcome: StreamOutcome) => void;
  #settle!: (outcome: StreamOutcome) => void;
  #outcome: StreamOutcome | undefined;
  #buffer: Row[] = [];
  #paused = false;
  #discarding = false;
  /** The pending `next()`, waiting for a full chunk or the end. */
  #wake: (() => void) | undefined;
  /** What the current result is: the row set given, another row set, or an OK packet. */
  #current: 'rows' | 'skip' | 'header' = 'skip';
  #sawRowSet = false;
  /** The status flags of the last result when it is an OK packet. */
  #lastStatus: number | undefined;
  readonly #onConnectionError = (error: unknown): void => this.#finish({ ok: false, error });

  /** Sends the query; `onEnd` hears how it ended, once, as soon as it does. */
  constructor(
    connection: Connection,
    sql: string,
    parameters: readonly unknown[],
    chunkSize: number,
    onEnd: (outcome: StreamOutcome) => void,
  ) {
    this.#connection = connection;
    this.#chunkSize = chunkSize;
    this.#onEnd = onEnd;
    this.done = new Promise((resolve) => {
      this.#settle = resolve;
    });
    // A query with no callback hears of a dead connection only through the connection's
    // 'error' event (mysql2 may emit it synchronously from query() when the socket is
    // known closed): listened to before sending.
    connection.on('error', this.#onConnectionError);
    try {
      // (sql, values), not an options object: see MysqlDriver#createConnection.
      const query = connection.query(sql, parameters as QueryValues);
      query.on('fields', (fields: unknown) => this.#onFields(fields));
      query.on('result', (result: unknown) => this.#onResult(result));
      query.on('error', (error: unknown) => this.#finish({ ok: false, error }));
      // After an error mysql2 emits 'end' too: #finish keeps the first outcome.
      query.on('end', () => this.#finish({ ok: true, result: this.#lastStatus }));
    } catch (error) {
      // mysql2 refuses some parameters synchronously, before anything is sent.
      this.#finish({ ok: false, error });
    }
  }

  /** True once the statement is over on the wire. */
  get ended(): boolean {
    return this.#outcome !== undefined;
  }

  /**
   * The next chunk (`chunkSize` rows, fewer only for the last), once it is there; then the
   * end, or the error. Rows received before an error are given before it. One at a time.
   * After `discard()`, the end at once (a pending call included).
   */
  next(): Promise<StreamStep<Row>> {
    return new Promise((resolve) => {
      const attempt = (): void => {
        let step: StreamStep<Row>;
        if (this.#discarding) {
          step = { kind: 'end' };
        } else if (this.#buffer.length >= this.#chunkSize || (this.#outcome !== undefined && this.#buffer.length > 0)) {
          step = { kind: 'rows', rows: this.#buffer.splice(0, this.#chunkSize) };
        } else if (this.#outcome !== undefined) {
          step = this.#outcome.ok ? { kind: 'end' } : { kind: 'error', error: this.#outcome.error };
        } else {
          this.#wake = attempt;
          return;
        }
        this.#wake = undefined;
        resolve(step);
        // The consumer has taken a chunk: fetch the next one while it works on this one.
        this.#resume();
      };
      attempt();
    });
  }

  /**
   * Drops the rows received and those still to come, and reads on without pausing, so the
   * statement can end on the wire. Packets already received are read at once: when the end
   * was among them, `ended` is true on return.
   */
  discard(): void {
    this.#discarding = true;
    this.#buffer = [];
    this.#wake?.();
    this.#resume();
  }

  #onFields(fields: unknown): void {
    // Once per result: column definitions for a result set, undefined for an OK packet.
    if (fields === undefined) {
      this.#current = 'header';
      return;
    }
    this.#lastStatus = undefined;
    this.#current = this.#sawRowSet ? 'skip' : 'rows';
    this.#sawRowSet = true;
  }

  #onResult(result: unknown): void {
    if (this.#current === 'header') {
      const status = (result as { serverStatus?: unknown } | null)?.serverStatus;
      this.#lastStatus = typeof status === 'number' ? status : undefined;
      return;
    }
    if (this.#current === 'skip' || this.#discarding) return;
    this.#buffer.push(result as Row);
    if (this.#buffer.length < this.#chunkSize) return;
    if (this.#wake !== undefined) {
      // The consumer is waiting: the chunk goes to it, reading goes on.
      this.#wake();
    } else if (!this.#paused) {
      this.#paused = true;
      this.#connection.pause();
    }
  }

  #resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    // Handles the packets held while paused, synchronously: it may pause again.
    this.#connection.resume();
  }

  #finish(outcome: StreamOutcome): void {
    if (this.#outcome !== undefined) return;
    this.#outcome = outcome;
    this.#connection.off('error', this.#onConnectionError);
    this.#onEnd(outcome);
    this.#settle(outcome);
    this.#wake?.();
  }
}
