import mysql from 'mysql2';
import type { Connection, ConnectionOptions, ExecuteValues, QueryError, ResultSetHeader } from 'mysql2';
import { describeError, InvalidOptionError } from '../../errors.js';
import { isAbortOf } from '../abort.js';
import { ConnectionHealth } from '../connection-health.js';
import { within } from '../time-limit.js';
import { ConnectionLostError } from '../errors.js';
import type { CancelSignal, ConnectOptions, Driver, DriverConnection, RunOptions, StatementResult, StreamOptions } from '../driver.js';
import { ControlConnection, destroySocket, quit } from './control-connection.js';
import { ER, isFatalMysqlError, serverErrno, translateConnectError, translateRunError } from './mysql-errors.js';
import { RowStream } from './mysql-stream.js';

/**
 * Settings for `MysqlDriver`: what mysql2's `createConnection` takes, minus the options
 * that would change the shape of results (rows are objects keyed by column name, and
 * parameters are positional `?`), plus sluice's own.
 */
export type MysqlConnectionConfig = Omit<
  ConnectionOptions,
  'rowsAsArray' | 'nestTables' | 'namedPlaceholders' | 'maxPreparedStatements'
> & {
  /**
   * Prepared statements kept per connection, least recently used out (closed on the
   * server when evicted). Queries (SELECT, INSERT, UPDATE, DELETE, REPLACE, WITH) run
   * through `execute()`: prepared once per connection, then only executed, so the server
   * does not parse them again. 0 sends every statement as text with `query()`. Default 100.
   *
   * One visible difference: the binary protocol returns a FLOAT column at single
   * precision (`1.100000023841858`, not `1.1`); DOUBLE and DECIMAL are unaffected.
   */
  readonly statementCacheSize?: number;
  /**
   * How long to wait for the server to let go of a cancelled statement (and for the
   * `KILL QUERY` to be delivered) before the connection is closed and reported broken.
   * Default 2 s.
   */
  readonly cancelGraceMs?: number;
};

/** Status flags from the server's OK packets (mysql_com.h). */
const SERVER_STATUS_IN_TRANS = 0x0001;
const SERVER_STATUS_AUTOCOMMIT = 0x0002;

/**
 * The MySQL / MariaDB backend, over `mysql2`. A statement whose signal aborts is killed on
 * the server with `KILL QUERY <thread id>`, sent over a control connection the driver keeps
 * outside its pool; if the server does not let go of it within `cancelGraceMs`, the
 * connection is killed and closed, and reported broken.
 */
export class MysqlDriver implements Driver {
  readonly dialect = 'mysql';
  readonly #options: ConnectionOptions;
  readonly #cancelGraceMs: number;
  readonly #statementCacheSize: number;
  /** `host:port/database`, for messages: never the password or the full URL. */
  readonly #target: string;
  readonly #control: ControlConnection;

  constructor(config: MysqlConnectionConfig) {
    const { cancelGraceMs, statementCacheSize, ...options } = config;
    if (cancelGraceMs !== undefined && !(Number.isFinite(cancelGraceMs) && cancelGraceMs > 0)) {
      throw new InvalidOptionError('cancelGraceMs', 'must be a positive number of milliseconds');
    }
    if (statementCacheSize !== undefined && !(Number.isSafeInteger(statementCacheSize) && statementCacheSize >= 0)) {
      throw new InvalidOptionError('statementCacheSize', 'must be a whole number, 0 or more');
    }
    this.#options = options;
    this.#cancelGraceMs = cancelGraceMs ?? 2_000;
    this.#statementCacheSize = statementCacheSize ?? 100;
    this.#target = describeTarget(options);
    this.#control = new ControlConnection(() => this.#createConnection());
  }

  async connect({ signal }: ConnectOptions): Promise<DriverConnection> {
    if (signal.aborted) throw signal.reason;
    const connection = this.#createConnection();
    // Until the connection is handed over, a late socket error must not become an
    // unhandled 'error' event; after a failed connect this listener stays for good.
    const swallow = (): void => {};
    connection.on('error', swallow);
    try {
      await new Promise<void>((resolve, reject) => {
        const abort = (): void => {
          destroySocket(connection);
          reject(signal.reason);
        };
        signal.addEventListener('abort', abort, { once: true });
        connection.connect((error) => {
          signal.removeEventListener('abort', abort);
          // mysql2 passes null or undefined for success, depending on the command.
          if (!error) resolve();
          else reject(translateConnectError(error, this.#target));
        });
      });
    } catch (error) {
      destroySocket(connection);
      throw error;
    }
    // The connect callback and an abort may land in the same turn: the abort wins.
    if (signal.aborted as boolean) {
      await quit(connection, this.#cancelGraceMs);
      throw signal.reason;
    }
    const lent = new MysqlConnection(connection, this.#control, this.#cancelGraceMs, this.#statementCacheSize > 0);
    connection.off('error', swallow);
    return lent;
  }

  isFatal(error: unknown): boolean {
    return error instanceof ConnectionLostError;
  }

  /** Closes the control connection. Connections already lent are closed by their owner. */
  async close(): Promise<void> {
    await this.#control.close(this.#cancelGraceMs);
  }

  #createConnection(): Connection {
    // A fresh copy each time: mysql2 writes the parts of `uri` into the object it is given.
    const connection = mysql.createConnection({
      ...this.#options,
      // mysql2's own LRU; it closes the statements it evicts. Its default (16,000 per
      // connection) would run a busy server into max_prepared_stmt_count (16,382 in all).
      maxPreparedStatements: Math.max(1, this.#statementCacheSize),
    });
    // Rows are objects keyed by column name and parameters are positional, whatever the
    // configuration says (`uri` can still set these: mysql2 reads options from its query
    // string, and lets them override falsy explicit ones). Fixed once here rather than per
    // statement: an options object per query() costs mysql2 a merge of every option,
    // measured at about a fifth of a primary-key lookup's client time.
    connection.config.rowsAsArray = false;
    connection.config.nestTables = false;
    connection.config.namedPlaceholders = false;
    return connection;
  }
}

/** Describes where a configuration points as `host:port/database`, never with credentials. */
function describeTarget(options: ConnectionOptions): string {
  let host = options.host;
  let port = options.port === undefined ? undefined : String(options.port);
  let database = options.database;
  if (options.uri !== undefined && options.uri !== '') {
    let url: URL;
    try {
      url = new URL(options.uri);
    } catch {
      // The URL itself is not quoted: it may hold a password.
      throw new InvalidOptionError('uri', 'is not a valid URL');
    }
    // As in mysql2, options given explicitly win over the parts of `uri`.
    host ||= url.hostname;
    port ||= url.port;
    database ||= decodeURIComponent(url.pathname.slice(1));
  }
  if (options.socketPath !== undefined && options.socketPath !== '') return `${options.socketPath}/${database ?? ''}`;
  return `${host || 'localhost'}:${port || '3306'}/${database ?? ''}`;
}

type Outcome =
  | { readonly ok: true; readonly result: unknown }
  | { readonly ok: false; readonly error: unknown };

function isHeader(value: unknown): value is ResultSetHeader {
  return value !== null && typeof value === 'object' && value.constructor?.name === 'ResultSetHeader';
}

/** True when a result holds several results (a CALL, or multipleStatements). */
function isMulti(result: unknown): result is unknown[] {
  return Array.isArray(result) && result.length > 0 && (Array.isArray(result[0]) || isHeader(result[0]));
}

function toBigInt(value: number | string | undefined): bigint | undefined {
  if (value === undefined) return undefined;
  try {
    return BigInt(value);
  } catch {
    return undefined;
  }
}

/**
 * Statements worth preparing: queries, which are run again and again with new parameters.
 * Transaction control, SET, DDL and the like go as text: preparing them would only spend a
 * round trip and a cache slot.
 */
const PREPARABLE = /^\s*\(*\s*(?:select|insert|update|delete|replace|with)\b/i;

/**
 * Above this many parameters a statement goes as text: the binary protocol takes at most
 * 65,535, and a statement that large (a bulk insert, a long IN list) is rarely run twice
 * with the same shape, so preparing it would cost a round trip and evict a useful entry.
 */
const MAX_PREPARED_PARAMETERS = 1_000;

class MysqlConnection implements DriverConnection {
  readonly #connection: Connection;
  readonly #control: ControlConnection;
  readonly #cancelGraceMs: number;
  readonly #prepare: boolean;
  readonly #threadId: number;
  /** A connection lost or closed mid-statement: the server runs the statement on unless killed. */
  readonly #health = new ConnectionHealth(() => void this.#control.kill('CONNECTION', this.#threadId, this.#cancelGraceMs));
  /**
   * Whether a transaction may be open. mysql2 has no transaction-status API, but every OK
   * packet carries the server's status flags: they set this exactly. A statement that ends
   * with a result set (or fails) carries none, so it sets this when it could have opened a
   * transaction, that is unless autocommit is known to be on.
   */
  #mayBeInTransaction = false;
  /** The server's autocommit flag as of the last OK packet; undefined until one is seen. */
  #autocommit: boolean | undefined;

  constructor(connection: Connection, control: ControlConnection, cancelGraceMs: number, prepare: boolean) {
    this.#connection = connection;
    this.#control = control;
    this.#cancelGraceMs = cancelGraceMs;
    this.#prepare = prepare;
    this.#threadId = connection.threadId;
    // mysql2 emits 'error' when an idle connection dies (KILL CONNECTION, wait_timeout, a
    // restart); with no listener that would crash the process. Here it marks it broken.
    connection.on('error', (error: unknown) =>
      this.#health.markBroken(new ConnectionLostError(`The MySQL connection failed: ${describeError(error)}.`, { cause: error })),
    );
    connection.on('end', () =>
      this.#health.markBroken(new ConnectionLostError('The MySQL server closed the connection.', { cause: undefined })),
    );
  }

  get broken(): boolean {
    return this.#health.broken;
  }

  onBroken(listener: (error: unknown) => void): void {
    this.#health.onBroken(listener);
  }

  async run<Row>(sql: string, parameters: readonly unknown[], options?: RunOptions): Promise<StatementResult<Row>> {
    const signal = options?.signal;
    if (signal?.aborted === true) throw signal.reason;
    if (this.#health.broken) throw new ConnectionLostError('The MySQL connection is closed.', { cause: undefined });
    this.#health.busy = true;
    try {
      const running = this.#query(sql, parameters);
      const outcome = signal === undefined ? await running : await this.#runCancellable(running, signal);
      if (!outcome.ok) throw outcome.error;
      return toStatementResult<Row>(outcome.result);
    } catch (error) {
      throw this.#failure(signal, error);
    } finally {
      this.#health.busy = false;
    }
  }

  /**
   * Runs one query as text and yields its rows in chunks of at most `chunkSize`, read from
   * the server only as fast as they are taken (see RowStream). The signal, at any point of
   * the stream, kills the statement on the server as in `run()`.
   *
   * Stopping early (`break`) kills the statement too (KILL QUERY), then reads and drops
   * what the server had sent already, within `cancelGraceMs`, else the connection is
   * abandoned. The MySQL protocol has no way to close a result set half way: the rest must
   * be read or the connection dropped. Reading the rest without the KILL could take as long
   * as the whole result; abandoning every time would cost a new connection for each early
   * stop (and a KILL CONNECTION, since the server does not notice a closed socket while it
   * computes). After the KILL only what was in flight is left, so the wait is short and
   * bounded, and the connection goes back to the pool clean.
   */
  async *stream<Row>(sql: string, parameters: readonly unknown[], options: StreamOptions): AsyncIterableIterator<Row[]> {
    const { signal, chunkSize } = options;
    if (!(Number.isSafeInteger(chunkSize) && chunkSize > 0)) {
      throw new InvalidOptionError('chunkSize', 'must be a whole number, 1 or more');
    }
    if (signal?.aborted === true) throw signal.reason;
    if (this.#health.broken) throw new ConnectionLostError('The MySQL connection is closed.', { cause: undefined });
    this.#health.busy = true;
    // A text query that ends with a result set carries no OK packet (#observeStatus(undefined)).
    const rows = new RowStream<Row>(this.#connection, sql, parameters, chunkSize, (end) =>
      this.#observeStatus(end.ok ? end.result : undefined),
    );
    // Set once the statement is being stopped: settles once the connection is clean or abandoned.
    let stopping: Promise<void> | undefined;
    const stop = (reason: unknown): Promise<void> => {
      // discard() first reads what was received already: the statement may be over then.
      rows.discard();
      stopping ??= rows.ended ? Promise.resolve() : this.#cancel(rows.done, reason);
      return stopping;
    };
    // An abort kills the statement at once, even while the consumer holds a chunk; a
    // pending next() then ends at once (discard()).
    const onAbort = (): void => void stop(signal?.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      for (;;) {
        const step = await rows.next();
        // (Re-read: TS narrowed `aborted` before the await.)
        if (signal !== undefined && (signal.aborted as boolean)) {
          // An abort rejects with the signal's reason untouched, as fetch() does.
          await stopping;
          throw signal.reason;
        }
        if (step.kind === 'end') return;
        if (step.kind === 'error') {
          const translated = translateRunError(step.error, this.#health.broken);
          if (translated instanceof ConnectionLostError) this.#abandon(translated);
          throw translated;
        }
        yield step.rows;
      }
    } finally {
      signal?.removeEventListener('abort', onAbort);
      // Stopped early (break, return(), the consumer's own error): nothing may keep running.
      // (Ended: this only drops what is left unread.)
      await stop(undefined);
      this.#health.busy = false;
    }
  }

  /**
   * Sends one statement, prepared (`execute()`) when it is a query and caching is on, as
   * text (`query()`) otherwise; settles with its outcome, never rejects.
   */
  #query(sql: string, parameters: readonly unknown[]): Promise<Outcome> {
    const prepared = this.#prepare && parameters.length <= MAX_PREPARED_PARAMETERS && PREPARABLE.test(sql);
    return this.#send(prepared ? 'execute' : 'query', sql, parameters);
  }

  #send(method: 'query' | 'execute', sql: string, parameters: readonly unknown[]): Promise<Outcome> {
    return new Promise((resolve) => {
      try {
        // (sql, values, callback), not (options, callback): see MysqlDriver#createConnection.
        const settle = (error: QueryError | null, result: unknown): void => {
          if (error) {
            this.#observeStatus(undefined);
            resolve({ ok: false, error });
          } else {
            this.#observeStatus(lastHeader(result)?.serverStatus);
            resolve({ ok: true, result });
          }
        };
        if (method === 'execute') this.#connection.execute(sql, parameters as ExecuteValues[], settle);
        else this.#connection.query(sql, parameters as unknown[], settle);
      } catch (error) {
        // mysql2 refuses some parameters synchronously, before anything is sent.
        resolve({ ok: false, error });
      }
    });
  }

  /**
   * Waits for a statement; when `signal` aborts, kills it on the server, waits for the
   * server to let go (bounded by `cancelGraceMs`), makes sure the connection is clean, and
   * rejects with `signal.reason`.
   */
  async #runCancellable(running: Promise<Outcome>, signal: CancelSignal): Promise<Outcome> {
    let onAbort: (() => void) | undefined;
    const aborted = new Promise<'aborted'>((resolve) => {
      onAbort = () => resolve('aborted');
      signal.addEventListener('abort', onAbort, { once: true });
    });
    try {
      const first = await Promise.race([running, aborted]);
      if (first !== 'aborted') return first;
    } finally {
      signal.removeEventListener('abort', onAbort!);
    }
    await this.#cancel(running, signal.reason);
    throw signal.reason;
  }

  /**
   * Kills the statement `running` on the server, waits for the server to let go of it
   * (bounded by `cancelGraceMs`), and makes sure the connection is clean, or abandons it.
   * Never rejects. `reason` is why, for the errors it leaves.
   */
  async #cancel(running: Promise<Outcome>, reason: unknown): Promise<void> {
    const killed = this.#control.kill('QUERY', this.#threadId, this.#cancelGraceMs);
    const outcome = await within(running, this.#cancelGraceMs);
    if (outcome === undefined) {
      // The server did not let go in time (or its answer is stuck on the way): the
      // connection's state is unknown. Kill it whole, so nothing keeps running there.
      this.#abandon(new ConnectionLostError('A cancelled MySQL statement did not stop in time.', { cause: reason }));
      void killed.then(() => this.#control.kill('CONNECTION', this.#threadId, this.#cancelGraceMs));
      return;
    }
    // Wait for the KILL itself too: until the server has acted on it, it could still land
    // on this connection's next statement.
    const delivered = await killed;
    if (this.#health.broken) return;
    if (!outcome.ok && serverErrno(outcome.error) === ER.queryInterrupted) {
      // Killed mid-statement: the server has let go of it, the connection is clean.
      return;
    }
    if (!outcome.ok && isFatalMysqlError(outcome.error)) {
      this.#abandon(new ConnectionLostError('The MySQL connection failed while a statement was cancelled.', { cause: outcome.error }));
      return;
    }
    if (!delivered) {
      // The statement ended on its own, but the KILL may still be on its way.
      this.#abandon(new ConnectionLostError('A statement was cancelled too late to be sure of the connection.', { cause: reason }));
      return;
    }
    // The statement ended without the interruption error: it finished before the KILL
    // landed, or it swallowed it (MariaDB's `DO SLEEP(n)` returns normally when killed, and
    // a lone `SELECT SLEEP(n)` returns 1 on MySQL). Either way the server acted on the KILL;
    // a cheap statement on this connection shows whether a kill is still pending for it
    // (then it consumes it) so the next user starts clean.
    const probe = await within(this.#query('DO 0', []), this.#cancelGraceMs);
    if (probe === undefined || (!probe.ok && serverErrno(probe.error) !== ER.queryInterrupted)) {
      this.#abandon(new ConnectionLostError('A cancelled MySQL connection did not answer cleanly.', { cause: reason }));
    }
  }

  /** Checks the server answers (COM_PING). An abort while waiting leaves the connection broken. */
  async ping(options?: RunOptions): Promise<void> {
    const signal = options?.signal;
    if (signal?.aborted === true) throw signal.reason;
    if (this.#health.broken) throw new ConnectionLostError('The MySQL connection is closed.', { cause: undefined });
    this.#health.busy = true;
    let onAbort: (() => void) | undefined;
    try {
      const pinged = new Promise<Outcome>((resolve) => {
        try {
          this.#connection.ping((error) => resolve(error ? { ok: false, error } : { ok: true, result: undefined }));
        } catch (error) {
          resolve({ ok: false, error });
        }
      });
      const aborted = new Promise<'aborted'>((resolve) => {
        onAbort = () => resolve('aborted');
        signal?.addEventListener('abort', onAbort, { once: true });
      });
      const outcome = await Promise.race([pinged, aborted]);
      if (outcome === 'aborted') {
        // A server that does not answer a ping in time is not one to lend out.
        this.#abandon(new ConnectionLostError('A MySQL ping did not answer in time.', { cause: signal?.reason }));
        throw signal?.reason;
      }
      if (!outcome.ok) throw outcome.error;
    } catch (error) {
      throw this.#failure(signal, error);
    } finally {
      if (onAbort !== undefined) signal?.removeEventListener('abort', onAbort);
      this.#health.busy = false;
    }
  }

  async reset(): Promise<void> {
    if (this.#health.broken) return;
    // Bounded: a server that does not answer a ROLLBACK within the grace period leaves the
    // connection in doubt (the rejection makes the pool destroy it).
    if (this.#mayBeInTransaction) await this.run('ROLLBACK', [], { signal: AbortSignal.timeout(this.#cancelGraceMs) });
  }

  async close(): Promise<void> {
    const wasBroken = this.#health.broken;
    this.#health.retire();
    if (wasBroken || this.#health.busy) {
      // Nothing to say goodbye to, or a statement in the way: close the socket now (a
      // statement still waiting fails with a lost connection instead of hanging).
      destroySocket(this.#connection);
      return;
    }
    await quit(this.#connection, this.#cancelGraceMs);
  }

  /** Records the status flags of an OK packet, or that a statement ended without one. */
  #observeStatus(serverStatus: number | undefined): void {
    if (serverStatus === undefined) {
      if (this.#autocommit !== true) this.#mayBeInTransaction = true;
      return;
    }
    this.#mayBeInTransaction = (serverStatus & SERVER_STATUS_IN_TRANS) !== 0;
    this.#autocommit = (serverStatus & SERVER_STATUS_AUTOCOMMIT) !== 0;
  }

  /**
   * What a failed statement rejects with: an abort's own reason untouched (as fetch() does),
   * else the translated error; a lost connection is abandoned.
   */
  #failure(signal: CancelSignal | undefined, error: unknown): unknown {
    if (isAbortOf(signal, error)) return error;
    const translated = translateRunError(error, this.#health.broken);
    if (translated instanceof ConnectionLostError) this.#abandon(translated);
    return translated;
  }

  /** Marks the connection broken and closes its socket: its state is unknown or it is gone. */
  #abandon(error: unknown): void {
    this.#health.markBroken(error);
    destroySocket(this.#connection);
  }

}


/** The last OK packet of a result, which carries the server status after the statement. */
function lastHeader(result: unknown): ResultSetHeader | undefined {
  if (isHeader(result)) return result;
  if (isMulti(result)) {
    const last = result[result.length - 1];
    return isHeader(last) ? last : undefined;
  }
  return undefined;
}

function toStatementResult<Row>(result: unknown): StatementResult<Row> {
  if (isHeader(result)) return fromHeader(result, []);
  if (isMulti(result)) {
    // Several results (a CALL): the first row set is the answer; the counts are those of
    // the last OK packet when no row set came back.
    const rowSet = result.find((part): part is Row[] => Array.isArray(part));
    if (rowSet !== undefined) return { rows: rowSet, affectedRows: undefined, insertId: undefined };
    const header = lastHeader(result);
    return header === undefined ? { rows: [], affectedRows: undefined, insertId: undefined } : fromHeader(header, []);
  }
  return { rows: (Array.isArray(result) ? result : []) as Row[], affectedRows: undefined, insertId: undefined };
}

function fromHeader<Row>(header: ResultSetHeader, rows: Row[]): StatementResult<Row> {
  // insertId 0 means no id was generated (an UPDATE, an INSERT without AUTO_INCREMENT).
  const insertId = toBigInt(header.insertId as number | string | undefined);
  return {
    rows,
    affectedRows: toBigInt(header.affectedRows as number | string | undefined),
    insertId: insertId === 0n ? undefined : insertId,
  };
}
