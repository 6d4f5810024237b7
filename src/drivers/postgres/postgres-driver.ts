import pg from 'pg';
import { BackgroundRetries } from '../background-retries.js';
import { isAbortOf } from '../abort.js';
import { ConnectionHealth } from '../connection-health.js';
import { within } from '../time-limit.js';
import { InvalidOptionError } from '../../errors.js';
import { ConnectionLostError, TransactionRolledBackError } from '../errors.js';
import type { CancelSignal, ConnectOptions, Driver, DriverConnection, RunOptions, StatementResult, StreamOptions } from '../driver.js';
import { sendCancelRequest, type PostgresEndpoint } from './cancel-request.js';
import { SQLSTATE, translateConnectError, translateRunError } from './postgres-errors.js';
import { StatementCache } from './statement-cache.js';

/** What `pg` keeps per connection about prepared statements (not in its types). */
interface PgParsedStatements {
  readonly connection: { parsedStatements: Record<string, string> };
}

/** Settings for `PostgresDriver`: what `pg.Client` takes, minus what sluice manages. */
export type PostgresConnectionConfig = Omit<pg.ClientConfig, 'query_timeout' | 'statement_timeout' | 'Client'> & {
  /** A server-side `statement_timeout` set on every connection, in ms: a backstop. 0 = none. */
  readonly statementTimeoutMs?: number;
  /** How long to wait for the server to let go of a cancelled statement before closing the socket. Default 2 s. */
  readonly cancelGraceMs?: number;
  /** Named prepared statements kept per connection (least recently used out). 0 disables. Default 100. */
  readonly statementCacheSize?: number;
};

/**
 * The PostgreSQL backend, over `pg`. A statement whose signal aborts is cancelled on the
 * server with a CancelRequest; if the server does not let go of it within `cancelGraceMs`,
 * the connection is closed and reported broken.
 */
export class PostgresDriver implements Driver {
  readonly dialect = 'postgres';
  readonly #config: PostgresConnectionConfig;
  /** `host:port/database`, for messages: never the password or the full URL. */
  readonly #target: string;
  /** Cancels for orphaned statements that could not be delivered, tried again. */
  readonly #retries = new BackgroundRetries();

  constructor(config: PostgresConnectionConfig) {
    const { statementCacheSize, cancelGraceMs } = config;
    if (statementCacheSize !== undefined && !(Number.isSafeInteger(statementCacheSize) && statementCacheSize >= 0)) {
      throw new InvalidOptionError('statementCacheSize', 'must be a whole number, 0 or more');
    }
    if (cancelGraceMs !== undefined && !(Number.isFinite(cancelGraceMs) && cancelGraceMs > 0)) {
      throw new InvalidOptionError('cancelGraceMs', 'must be a positive number of milliseconds');
    }
    this.#config = config;
    const probe = new pg.Client(config);
    this.#target = `${probe.host}:${probe.port}/${probe.database ?? ''}`;
  }

  async connect({ signal }: ConnectOptions): Promise<DriverConnection> {
    const { statementTimeoutMs, cancelGraceMs, statementCacheSize, ...clientConfig } = this.#config;
    const client = new pg.Client({
      ...clientConfig,
      ...(statementTimeoutMs !== undefined && statementTimeoutMs > 0 ? { statement_timeout: statementTimeoutMs } : {}),
    });
    // Until the connection is ours, a socket error must not become an unhandled 'error'.
    const swallow = (): void => {};
    client.on('error', swallow);
    // end() only half-closes a socket still connecting and waits on the server: destroy it.
    const abort = (): void => destroySocket(client);
    signal.addEventListener('abort', abort, { once: true });
    try {
      await client.connect();
    } catch (error) {
      throw signal.aborted ? signal.reason : translateConnectError(error, this.#target);
    } finally {
      signal.removeEventListener('abort', abort);
      client.off('error', swallow);
    }
    if (signal.aborted) {
      destroySocket(client);
      throw signal.reason;
    }
    return new PostgresConnection(
      client,
      { host: client.host, port: client.port },
      cancelGraceMs ?? 2_000,
      new StatementCache(statementCacheSize ?? 100),
      this.#retries,
    );
  }

  isFatal(error: unknown): boolean {
    return error instanceof ConnectionLostError;
  }

  async close(): Promise<void> {
    // Cancel requests use short-lived sockets of their own; only their retries are held.
    this.#retries.stop();
  }
}

/** What `pg` keeps of the socket (not in its types). */
interface PgSocketHolder {
  readonly connection?: { readonly stream?: { destroy(): void } };
}

/** Closes a client's socket at once, without waiting for the server to answer. */
function destroySocket(client: pg.Client): void {
  (client as unknown as PgSocketHolder).connection?.stream?.destroy();
}

/** A statement that commits a transaction. */
const COMMIT = /^\s*(?:commit|end)\b/i;

/** How long `close()` waits for a polite goodbye before destroying the socket. */
const CLOSE_GRACE_MS = 200;

class PostgresConnection implements DriverConnection {
  readonly #client: pg.Client;
  readonly #endpoint: PostgresEndpoint;
  readonly #cancelGraceMs: number;
  readonly #statements: StatementCache;
  readonly #health = new ConnectionHealth(() => this.#cancelOrphan());
  readonly #retries: BackgroundRetries;

  constructor(
    client: pg.Client,
    endpoint: PostgresEndpoint,
    cancelGraceMs: number,
    statements: StatementCache,
    retries: BackgroundRetries,
  ) {
    this.#client = client;
    this.#retries = retries;
    this.#endpoint = endpoint;
    this.#cancelGraceMs = cancelGraceMs;
    this.#statements = statements;
    // pg emits 'error' when an idle connection dies (e.g. pg_terminate_backend); with no
    // listener that would crash the process. Here it marks the connection broken instead.
    client.on('error', (error) => this.#health.markBroken(error));
    client.on('end', () => this.#health.markBroken(new ConnectionLostError('The PostgreSQL connection closed.', { cause: undefined })));
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
    if (this.#health.broken) throw new ConnectionLostError('The PostgreSQL connection is closed.', { cause: undefined });
    this.#health.busy = true;
    try {
      const result = await this.#execute(sql, parameters, signal, true).catch((error: unknown) => {
        // DDL can change what a cached statement returns ("cached plan must not change
        // result type"): forget it and run the statement once more, unless a transaction
        // is open (the error aborted it; the caller must retry the whole transaction).
        if ((error as { code?: unknown }).code !== SQLSTATE.featureNotSupported || this.#client.getTransactionStatus() !== 'I') {
          throw error;
        }
        const stale = this.#statements.forget(sql);
        if (stale === undefined) throw error;
        this.#deallocate(stale);
        return this.#execute(sql, parameters, signal, false);
      });
      if (result.command === 'ROLLBACK' && COMMIT.test(sql)) {
        // PostgreSQL answers COMMIT of a failed transaction with ROLLBACK, and no error.
        throw new TransactionRolledBackError(
          'COMMIT rolled the transaction back instead: a statement in it had failed (an error the code caught still aborts a PostgreSQL transaction). Nothing of it was written.',
          { sqlState: undefined, cause: undefined },
        );
      }
      return {
        rows: result.rows as Row[],
        affectedRows: result.command === 'SELECT' || result.rowCount === null ? undefined : BigInt(result.rowCount),
        insertId: undefined,
      };
    } catch (error) {
      // An abort rejects with the signal's reason untouched, as fetch() does.
      if (isAbortOf(signal, error)) throw error;
      throw translateRunError(error, this.#health.broken);
    } finally {
      this.#health.busy = false;
    }
  }

  /**
   * Waits for a statement; when `signal` aborts, cancels it on the server, waits for the
   * server to let go (bounded by `cancelGraceMs`), and rejects with `signal.reason`.
   */
  async #runCancellable<T>(running: Promise<T>, signal: CancelSignal): Promise<T> {
    let onAbort: (() => void) | undefined;
    const aborted = new Promise<'aborted'>((resolve) => {
      onAbort = () => resolve('aborted');
      // Already aborted (between two reads of a stream): cancel straight away.
      if (signal.aborted) resolve('aborted');
      else signal.addEventListener('abort', onAbort, { once: true });
    });
    const settled = running.then(
      (result) => ({ ok: true as const, result }),
      (error: unknown) => ({ ok: false as const, error }),
    );
    try {
      const first = await Promise.race([settled, aborted]);
      if (first !== 'aborted') {
        if (first.ok) return first.result;
        throw first.error;
      }
    } finally {
      signal.removeEventListener('abort', onAbort!);
    }

    const cancelled = this.#cancelOnServer();
    let graceTimer: ReturnType<typeof setTimeout> | undefined;
    const grace = new Promise<'stuck'>((resolve) => {
      graceTimer = setTimeout(() => resolve('stuck'), this.#cancelGraceMs);
    });
    const outcome = await Promise.race([settled, grace]);
    clearTimeout(graceTimer);
    await cancelled;
    if (outcome === 'stuck') {
      // The server did not let go in time: the connection's state is unknown.
      this.#health.markBroken(new ConnectionLostError('A cancelled statement did not stop in time.', { cause: signal.reason }));
      await this.close();
    } else if (outcome.ok || (outcome.error as { code?: unknown }).code !== SQLSTATE.queryCanceled) {
      // It finished (or failed) before the cancel landed: the cancel might still hit the
      // next statement on this connection, so it must not be reused. Nothing runs on it
      // now: not busy, so no cancel is sent for an orphan that does not exist.
      this.#health.busy = false;
      this.#health.markBroken(new ConnectionLostError('A statement was cancelled too late to be sure of the connection.', { cause: signal.reason }));
    }
    throw signal.reason;
  }

  /**
   * Cancels the statement of a connection lost (or closed) while it ran: the backend would
   * run it to its end, not noticing its client is gone. Tried again until the network lets
   * the cancel through.
   */
  #cancelOrphan(): void {
    void this.#cancelOnServer().then((delivered) => {
      if (!delivered) this.#retries.retry(() => this.#cancelOnServer(), this.#cancelGraceMs);
    });
  }

  /** Sends a CancelRequest for whatever this connection's backend is running. Never rejects. */
  #cancelOnServer(): Promise<boolean> {
    const { processID, secretKey } = this.#client as unknown as { processID: number; secretKey: number };
    return sendCancelRequest(this.#endpoint, processID, secretKey, this.#cancelGraceMs);
  }

  #execute(sql: string, parameters: readonly unknown[], signal: CancelSignal | undefined, cached: boolean): Promise<pg.QueryResult> {
    const running = this.#client.query({ text: sql, values: parameters as unknown[], ...(cached ? this.#prepared(sql) : {}) });
    return signal === undefined ? running : this.#runCancellable(running, signal);
  }

  /** A statement name for `sql`, deallocating the one it evicts (queued ahead of the next query). */
  #prepared(sql: string): { name: string } | Record<string, never> {
    const named = this.#statements.nameFor(sql);
    if (named === undefined) return {};
    if (named.evicted !== undefined) this.#deallocate(named.evicted);
    return { name: named.name };
  }

  #deallocate(name: string): void {
    // pg runs queries in order: this one completes before the next statement starts.
    this.#client.query(`DEALLOCATE ${name}`).catch(() => {});
    delete (this.#client as unknown as PgParsedStatements).connection.parsedStatements[name];
  }

  async *stream<Row>(sql: string, parameters: readonly unknown[], options: StreamOptions): AsyncIterableIterator<Row[]> {
    const signal = options.signal;
    if (signal?.aborted === true) throw signal.reason;
    if (this.#health.broken) throw new ConnectionLostError('The PostgreSQL connection is closed.', { cause: undefined });
    // Loaded on first use: only users who stream need pg-cursor installed.
    const { default: Cursor } = await import('pg-cursor');
    const cursor = this.#client.query(new Cursor<Row>(sql, parameters as unknown[]));
    this.#health.busy = true;
    // Closed only when the consumer stops early: a cursor that ended or failed is done
    // already, and closing it again would wait for an answer that never comes.
    let open = true;
    try {
      for (;;) {
        // Aborted while the consumer held the last chunk: nothing runs on the server now,
        // so there is nothing to cancel; the cursor is closed below.
        if (signal !== undefined && (signal.aborted as boolean)) throw signal.reason;
        const reading = cursor.read(options.chunkSize);
        let rows: Row[];
        try {
          rows = signal === undefined ? await reading : await this.#runCancellable(reading, signal);
        } catch (error) {
          open = false;
          if (isAbortOf(signal, error)) throw error;
          throw translateRunError(error, this.#health.broken);
        }
        if (rows.length === 0) {
          open = false;
          return;
        }
        yield rows;
      }
    } finally {
      if (open && !this.#health.broken) await this.#closeCursor(cursor);
      this.#health.busy = false;
    }
  }

  /** Closes a cursor stopped early; a server that does not answer in time costs the connection. */
  async #closeCursor(cursor: { close(): Promise<void> }): Promise<void> {
    const closed = await within(
      cursor.close().then(
        () => true,
        () => false,
      ),
      this.#cancelGraceMs,
    );
    if (closed !== true) {
      this.#health.markBroken(new ConnectionLostError('A PostgreSQL cursor did not close in time.', { cause: undefined }));
      destroySocket(this.#client);
    }
  }

  async ping(options?: RunOptions): Promise<void> {
    await this.run('SELECT 1', [], options);
  }

  async reset(): Promise<void> {
    if (this.#health.broken) return;
    // Bounded: a server that does not answer a ROLLBACK within the grace period leaves the
    // connection in doubt (the rejection makes the pool destroy it).
    if (this.#client.getTransactionStatus() !== 'I') await this.run('ROLLBACK', [], { signal: AbortSignal.timeout(this.#cancelGraceMs) });
  }

  async close(): Promise<void> {
    this.#health.retire();
    // A polite Terminate, but a server that stopped answering must not hold the socket open.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const impatient = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, CLOSE_GRACE_MS);
    });
    await Promise.race([this.#client.end().catch(() => {}), impatient]);
    clearTimeout(timer);
    destroySocket(this.#client);
  }

}
