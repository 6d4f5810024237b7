import type { Connection } from 'mysql2';
import { BackgroundRetries } from '../background-retries.js';
import { within } from '../time-limit.js';
import { isFatalMysqlError, serverErrno } from './mysql-errors.js';

/** ER_NO_SUCH_THREAD: "Unknown thread id". */
const ER_NO_SUCH_THREAD = 1094;

interface SocketLike {
  readonly destroyed: boolean;
  destroy(): void;
  once(event: 'close', listener: () => void): void;
}

function socketOf(connection: Connection): SocketLike | undefined {
  return (connection as unknown as { readonly stream?: SocketLike }).stream;
}

/**
 * Closes a connection's socket at once, without a goodbye. A statement waiting on it fails
 * with mysql2's `PROTOCOL_CONNECTION_LOST`; the server notices the closed socket.
 */
export function destroySocket(connection: Connection): void {
  socketOf(connection)?.destroy();
}

/**
 * Says goodbye (COM_QUIT) and resolves once the server has closed the connection, or after
 * `timeoutMs`, when the socket is destroyed instead. Never rejects.
 */
export function quit(connection: Connection, timeoutMs: number): Promise<void> {
  return new Promise((resolve) => {
    const socket = socketOf(connection);
    if (socket === undefined || socket.destroyed) {
      resolve();
      return;
    }
    const timer = setTimeout(() => socket.destroy(), timeoutMs);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
    try {
      // The server answers COM_QUIT by closing the connection.
      connection.end(() => {});
    } catch {
      socket.destroy();
    }
  });
}

/**
 * Runs one statement on a control connection: 'ok', the server's error number when it
 * refused, or 'dead' when the connection did not open or died.
 */
function send(current: Current, sql: string): Promise<'ok' | 'dead' | number | undefined> {
  return current.opened.then((open) =>
    open
      ? new Promise((resolve) => {
          try {
            current.connection.query(sql, (error) => {
              if (!error) resolve('ok');
              else resolve(isFatalMysqlError(error) ? 'dead' : serverErrno(error));
            });
          } catch {
            resolve('dead');
          }
        })
      : 'dead',
  );
}

interface Current {
  readonly connection: Connection;
  readonly opened: Promise<boolean>;
}

/**
 * The one connection a `MysqlDriver` keeps outside its pool, to send `KILL QUERY` and
 * `KILL CONNECTION` for the connections it lent. Opened on first use, opened again after
 * it dies or stops answering, closed by `close()`. Never throws: a kill that cannot be
 * delivered resolves `false`, and the caller treats the target's state as unknown.
 */
export class ControlConnection {
  readonly #create: () => Connection;
  #current: Current | undefined;
  #closed = false;
  /** `KILL CONNECTION`s waiting to be tried again. */
  readonly #retries = new BackgroundRetries();

  constructor(create: () => Connection) {
    this.#create = create;
  }

  /**
   * Sends `KILL QUERY <threadId>` (or `KILL CONNECTION`). Resolves `true` once the server
   * has acted on it, `false` when it could not be delivered within `timeoutMs`. A control
   * connection found dead (killed, timed out by the server) is replaced once, at once.
   * A `KILL CONNECTION` not delivered is tried again in the background (BackgroundRetries)
   * until it is, or until `close()`: its target was abandoned with a statement that may
   * still run, and the server does not stop it when the client goes.
   */
  async kill(kind: 'QUERY' | 'CONNECTION', threadId: number, timeoutMs: number): Promise<boolean> {
    if (this.#closed || !Number.isSafeInteger(threadId) || threadId <= 0) return false;
    const outcome = await this.#deliver(kind, threadId, timeoutMs);
    if (outcome === 'undelivered' && kind === 'CONNECTION') {
      this.#retries.retry(
        () => this.#deliver('CONNECTION', threadId, timeoutMs).then((next) => next !== 'undelivered', () => false),
        timeoutMs,
      );
    }
    return outcome === 'done';
  }

  /** One try at a KILL, bounded by `timeoutMs`: done, refused by the server, or not delivered. */
  async #deliver(kind: 'QUERY' | 'CONNECTION', threadId: number, timeoutMs: number): Promise<'done' | 'refused' | 'undelivered'> {
    let gaveUp = false;
    let used: Current | undefined;
    const attempt = async (): Promise<'done' | 'refused' | 'undelivered'> => {
      for (let tries = 0; tries < 2 && !this.#closed && !gaveUp; tries += 1) {
        const current = this.#connection();
        used = current;
        const sent = await send(current, `KILL ${kind} ${threadId}`);
        if (sent === 'ok') return 'done';
        // Unknown thread: it is gone already (a KILL CONNECTION has then done its job).
        if (sent !== 'dead') return kind === 'CONNECTION' && sent === ER_NO_SUCH_THREAD ? 'done' : 'refused';
        this.#discard(current);
      }
      return 'undelivered';
    };
    const outcome = await within(attempt(), timeoutMs);
    if (outcome === undefined) {
      gaveUp = true;
      // A control connection that does not answer is no use: the next kill opens a new one.
      // Only the one this kill used: another kill may have opened a healthy one meanwhile.
      if (used !== undefined) this.#discard(used);
      return 'undelivered';
    }
    return outcome;
  }

  /** Closes the control connection, if one is open. Never rejects. */
  async close(timeoutMs: number): Promise<void> {
    this.#closed = true;
    this.#retries.stop();
    const current = this.#current;
    this.#current = undefined;
    if (current !== undefined) await quit(current.connection, timeoutMs);
  }

  #connection(): Current {
    if (this.#current !== undefined) return this.#current;
    const connection = this.#create();
    let current: Current | undefined;
    const forget = (): void => {
      if (current !== undefined && this.#current === current) this.#current = undefined;
    };
    // A control connection that dies while idle (wait_timeout, a restart) must not crash the
    // process: it is forgotten, and the next kill opens another.
    connection.on('error', forget);
    connection.on('end', forget);
    const opened = new Promise<boolean>((resolve) => {
      connection.connect((error) => {
        if (error) {
          forget();
          destroySocket(connection);
        }
        resolve(!error);
      });
    });
    current = { connection, opened };
    this.#current = current;
    return current;
  }

  #discard(current: Current): void {
    if (this.#current === current) this.#current = undefined;
    destroySocket(current.connection);
  }
}
