import { describeError, SluiceError } from '../../errors.js';
import {
  ConnectionError,
  ConnectionLostError,
  DatabaseError,
  DeadlockError,
  ForeignKeyViolationError,
  SerializationFailureError,
  UniqueViolationError,
} from '../errors.js';

/** Server error numbers sluice names, from the MySQL and MariaDB error references. */
export const ER = {
  dupKey: 1022,
  dupEntry: 1062,
  dupEntryWithKeyName: 1586,
  noReferencedRow: 1216,
  rowIsReferenced: 1217,
  rowIsReferenced2: 1451,
  noReferencedRow2: 1452,
  lockDeadlock: 1213,
  /** MariaDB's snapshot isolation ("Record has changed since last read"): a serialization failure. */
  checkRead: 1020,
  queryInterrupted: 1317,
  /** MariaDB's `max_statement_time`. */
  statementTimeout: 1969,
  /** MySQL's `MAX_EXECUTION_TIME`. */
  queryTimeout: 3024,
  dbAccessDenied: 1044,
  accessDenied: 1045,
  badDb: 1049,
  hostNotPrivileged: 1130,
  notSupportedAuthMode: 1251,
  accessDeniedNoPassword: 1698,
  noSuchThread: 1094,
  serverShutdown: 1053,
  abortingConnection: 1152,
  newAbortingConnection: 1184,
  connectionKilled: 1927,
  clientInteractionTimeout: 4031,
} as const;

const UNIQUE = new Set<number>([ER.dupKey, ER.dupEntry, ER.dupEntryWithKeyName]);
const FOREIGN_KEY = new Set<number>([ER.noReferencedRow, ER.rowIsReferenced, ER.rowIsReferenced2, ER.noReferencedRow2]);
const CANCELED = new Set<number>([ER.queryInterrupted, ER.statementTimeout, ER.queryTimeout]);
const AUTH = new Set<number>([
  ER.dbAccessDenied,
  ER.accessDenied,
  ER.hostNotPrivileged,
  ER.notSupportedAuthMode,
  ER.accessDeniedNoPassword,
]);
/** Server errors after which the server has closed (or is closing) the connection. */
const FATAL = new Set<number>([
  ER.serverShutdown,
  ER.abortingConnection,
  ER.newAbortingConnection,
  ER.connectionKilled,
  ER.clientInteractionTimeout,
  1158, // ER_NET_READ_ERROR
  1159, // ER_NET_READ_INTERRUPTED
  1160, // ER_NET_ERROR_ON_WRITE
  1161, // ER_NET_WRITE_INTERRUPTED
]);

interface MysqlErrorFields {
  readonly errno?: unknown;
  readonly sqlState?: unknown;
  readonly fatal?: unknown;
}

/** The server's error number, when `error` is an error the server sent (not a socket or client error). */
export function serverErrno(error: unknown): number | undefined {
  if (error === null || typeof error !== 'object') return undefined;
  const { errno, sqlState } = error as MysqlErrorFields;
  return typeof errno === 'number' && errno > 0 && typeof sqlState === 'string' ? errno : undefined;
}

function sqlStateOf(error: unknown): string | undefined {
  if (error === null || typeof error !== 'object') return undefined;
  const { sqlState } = error as MysqlErrorFields;
  return typeof sqlState === 'string' && /^[0-9A-Z]{5}$/.test(sqlState) ? sqlState : undefined;
}

/** True when mysql2 says the error ended the connection (socket errors, protocol errors, lost connections). */
export function isFatalMysqlError(error: unknown): boolean {
  if (error === null || typeof error !== 'object') return false;
  if ((error as MysqlErrorFields).fatal === true) return true;
  const errno = serverErrno(error);
  return errno !== undefined && FATAL.has(errno);
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : describeError(error);
}

/** Turns an error from `mysql2` during connect into a `ConnectionError`. `target` is `host:port/database`. */
export function translateConnectError(error: unknown, target: string): SluiceError {
  if (error instanceof SluiceError) return error;
  const errno = serverErrno(error);
  const details = { errno, sqlState: sqlStateOf(error), cause: error };
  if (errno !== undefined && AUTH.has(errno)) {
    // The server's message names the user and host; it is kept as `cause`, not quoted.
    return new ConnectionError(
      'AUTH_FAILED',
      `Authentication to MySQL at ${target} failed (${describeError(error)}): check the user, password and grants.`,
      details,
    );
  }
  if (errno === ER.badDb) {
    return new ConnectionError('UNKNOWN_DATABASE', `MySQL at ${target}: ${messageOf(error)}.`, details);
  }
  // Refused, reset, unreachable, timed out, too many connections: worth retrying. Named by
  // code only: mysql2's own messages are not guaranteed to leave the configuration out.
  return new ConnectionError('CONNECTION_FAILED', `Could not connect to MySQL at ${target} (${describeError(error)}).`, details);
}

/**
 * Turns an error from `mysql2` while running a statement into a `SluiceError`. `broken`
 * says whether the connection died meanwhile (client-side errors are then a lost connection).
 */
export function translateRunError(error: unknown, broken: boolean): SluiceError {
  if (error instanceof SluiceError) return error;
  const errno = serverErrno(error);
  if (errno === undefined) {
    if (broken || isFatalMysqlError(error)) {
      return new ConnectionLostError(`The MySQL connection failed: ${describeError(error)}.`, { cause: error });
    }
    // A client-side refusal (bad parameters and the like): the connection is fine.
    return new DatabaseError('QUERY_FAILED', messageOf(error), { cause: error });
  }
  const message = messageOf(error);
  const details = { errno, sqlState: sqlStateOf(error), cause: error };
  if (UNIQUE.has(errno)) return new UniqueViolationError(message, details);
  if (FOREIGN_KEY.has(errno)) return new ForeignKeyViolationError(message, details);
  if (errno === ER.lockDeadlock) return new DeadlockError(message, details);
  if (errno === ER.checkRead) return new SerializationFailureError(message, details);
  if (CANCELED.has(errno)) return new DatabaseError('QUERY_CANCELED', message, details);
  if (FATAL.has(errno)) {
    return new ConnectionLostError(`The MySQL server ended the connection (${errno}): ${message}`, { cause: error });
  }
  return new DatabaseError('QUERY_FAILED', message, details);
}
