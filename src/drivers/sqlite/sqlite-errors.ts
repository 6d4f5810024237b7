import { SluiceError } from '../../errors.js';
import {
  ConnectionError,
  ConnectionLostError,
  DatabaseError,
  ForeignKeyViolationError,
  SerializationFailureError,
  UniqueViolationError,
} from '../errors.js';
import type { BlockingErrorShape } from '../offload/blocking-driver.js';
import { OPEN_ERROR_NAME } from './open-error.js';

/** Extended result codes, by better-sqlite3's names, after which a worker's connection is not trusted again. */
const FATAL_PREFIXES = ['SQLITE_IOERR', 'SQLITE_CORRUPT', 'SQLITE_NOTADB', 'SQLITE_NOMEM', 'SQLITE_CANTOPEN'];

/**
 * Turns an error from a SQLite worker (better-sqlite3's `SqliteError`, as the offload host
 * hands it over) into a `SluiceError`. The SQLite code stays visible as `driverCode`.
 * `target` names the database file for connect errors (a path is no secret).
 */
export function translateSqliteError(error: BlockingErrorShape, target: string): SluiceError {
  if ((error as unknown) instanceof SluiceError) return error as unknown as SluiceError;
  const code = error.code;
  const details = { driverCode: code, cause: error };
  if (error.name === OPEN_ERROR_NAME) {
    if (code?.startsWith('SQLITE_BUSY') === true) {
      // Another process held the file locked past the busy timeout while this connection
      // set it up: transient, retried with backoff.
      return new ConnectionError('CONNECTION_FAILED', `SQLite database ${target} is locked (${code}): ${error.message}`, details);
    }
    return new ConnectionError(
      'CANNOT_OPEN',
      `Cannot open SQLite database ${target} (${code ?? error.name}): ${error.message}. ` +
        'Check that its directory exists, that it is readable and writable, and that it is a SQLite database.',
      details,
    );
  }
  const message = error.message;
  if (code === undefined) return new DatabaseError('QUERY_FAILED', message, details);
  switch (code) {
    case 'SQLITE_CONSTRAINT_UNIQUE':
    case 'SQLITE_CONSTRAINT_PRIMARYKEY':
      return new UniqueViolationError(message, details);
    case 'SQLITE_CONSTRAINT_FOREIGNKEY':
      return new ForeignKeyViolationError(message, details);
    case 'SQLITE_BUSY_SNAPSHOT':
      // WAL: a read transaction tried to write after another connection committed.
      return new SerializationFailureError(message, details);
    case 'SQLITE_INTERRUPT':
      return new DatabaseError('QUERY_CANCELED', message, details);
    default:
      if (code.startsWith('SQLITE_BUSY')) return busyError(message, details);
      return new DatabaseError('QUERY_FAILED', message, details);
  }
}

/**
 * The database stayed locked past the busy timeout: another connection (another process,
 * or a transaction of this pool) held the write lock. Retrying later may well succeed.
 */
export function busyError(message: string, details: { readonly driverCode?: string | undefined; readonly cause: unknown }): DatabaseError {
  return new DatabaseError('BUSY', message, details, true);
}

/** Whether an error from `run` leaves its worker's connection untrustworthy. */
export function isFatalSqliteError(error: unknown): boolean {
  if (error instanceof ConnectionLostError) return true;
  if (!(error instanceof DatabaseError)) return false;
  const code = error.driverCode;
  return code !== undefined && FATAL_PREFIXES.some((prefix) => code.startsWith(prefix));
}
