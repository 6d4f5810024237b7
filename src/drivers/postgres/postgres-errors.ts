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

/** SQLSTATEs sluice names, from PostgreSQL's errcodes appendix. */
export const SQLSTATE = {
  uniqueViolation: '23505',
  foreignKeyViolation: '23503',
  deadlockDetected: '40P01',
  serializationFailure: '40001',
  queryCanceled: '57014',
  /** Raised, among others, as "cached plan must not change result type". */
  featureNotSupported: '0A000',
  invalidPassword: '28P01',
  invalidAuthorization: '28000',
  invalidCatalogName: '3D000',
  adminShutdown: '57P01',
  crashShutdown: '57P02',
  cannotConnectNow: '57P03',
} as const;

/** SQLSTATE classes after which the connection cannot be trusted. */
const FATAL_CLASSES = ['08', '57P', 'XX'];

function sqlStateOf(error: unknown): string | undefined {
  const code = (error as { readonly code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : describeError(error);
}

/** Turns an error from `pg` during connect into a `ConnectionError`. */
export function translateConnectError(error: unknown, target: string): SluiceError {
  if (error instanceof SluiceError) return error;
  const sqlState = sqlStateOf(error);
  const details = { sqlState, cause: error };
  if (sqlState === SQLSTATE.invalidPassword || sqlState === SQLSTATE.invalidAuthorization) {
    return new ConnectionError(
      'AUTH_FAILED',
      `Authentication to PostgreSQL at ${target} failed (${sqlState}): check the user and password.`,
      details,
    );
  }
  if (sqlState === SQLSTATE.invalidCatalogName) {
    return new ConnectionError('UNKNOWN_DATABASE', `PostgreSQL at ${target}: ${messageOf(error)}.`, details);
  }
  // pg's own messages for refused, reset or unreachable servers name host and port only.
  return new ConnectionError(
    'CONNECTION_FAILED',
    `Could not connect to PostgreSQL at ${target} (${sqlState ?? describeError(error)}).`,
    details,
  );
}

/**
 * Turns an error from `pg` while running a statement into a `SluiceError`. `broken` says
 * whether the connection died meanwhile (errors without a SQLSTATE are then a lost connection).
 */
export function translateRunError(error: unknown, broken: boolean): SluiceError {
  if (error instanceof SluiceError) return error;
  const sqlState = sqlStateOf(error);
  const message = messageOf(error);
  const details = { sqlState, cause: error };
  switch (sqlState) {
    case SQLSTATE.uniqueViolation:
      return new UniqueViolationError(message, details);
    case SQLSTATE.foreignKeyViolation:
      return new ForeignKeyViolationError(message, details);
    case SQLSTATE.deadlockDetected:
      return new DeadlockError(message, details);
    case SQLSTATE.serializationFailure:
      return new SerializationFailureError(message, details);
    case SQLSTATE.queryCanceled:
      return new DatabaseError('QUERY_CANCELED', message, details);
    case undefined:
      if (broken) {
        return new ConnectionLostError(`The PostgreSQL connection failed: ${describeError(error)}.`, { cause: error });
      }
      return new DatabaseError('QUERY_FAILED', message, details);
    default:
      if (isFatalSqlState(sqlState)) {
        return new ConnectionLostError(`The PostgreSQL server ended the connection (${sqlState}): ${message}`, {
          cause: error,
        });
      }
      return new DatabaseError('QUERY_FAILED', message, details);
  }
}

function isFatalSqlState(sqlState: string): boolean {
  return FATAL_CLASSES.some((prefix) => sqlState.startsWith(prefix));
}
