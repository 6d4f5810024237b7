import { SluiceError } from '../errors.js';

/** Where a database error came from, for `DatabaseError`. */
export interface DatabaseErrorDetails {
  /** The SQLSTATE the server reported (PostgreSQL, and MySQL's `sqlState`). */
  readonly sqlState?: string | undefined;
  /** MySQL's numeric error code (`errno`). */
  readonly errno?: number | undefined;
  /** The driver's own error code where it has no SQLSTATE (SQLite: `SQLITE_CONSTRAINT_UNIQUE`). */
  readonly driverCode?: string | undefined;
  /** The driver's error, untouched. */
  readonly cause: unknown;
}

/**
 * The server refused a statement. `code` tells the kind (`UNIQUE_VIOLATION`,
 * `FOREIGN_KEY_VIOLATION`, `DEADLOCK`, `SERIALIZATION_FAILURE`, `QUERY_CANCELED`, or
 * `QUERY_FAILED` for the rest); `sqlState` / `errno` carry the server's own code.
 */
export class DatabaseError extends SluiceError {
  readonly sqlState: string | undefined;
  readonly errno: number | undefined;
  /** The driver's own error code (SQLite's extended result code name, e.g. `SQLITE_BUSY`). */
  readonly driverCode: string | undefined;
  /** True when running the same transaction again may well succeed (deadlocks, serialization failures). */
  readonly retryable: boolean;

  constructor(code: string, message: string, details: DatabaseErrorDetails, retryable = false) {
    super(code, message, { cause: details.cause });
    this.sqlState = details.sqlState;
    this.errno = details.errno;
    this.driverCode = details.driverCode;
    this.retryable = retryable;
  }
}

/** An INSERT or UPDATE would duplicate a unique key. */
export class UniqueViolationError extends DatabaseError {
  constructor(message: string, details: DatabaseErrorDetails) {
    super('UNIQUE_VIOLATION', message, details);
  }
}

/** A row refers to a missing parent, or a parent still has children. */
export class ForeignKeyViolationError extends DatabaseError {
  constructor(message: string, details: DatabaseErrorDetails) {
    super('FOREIGN_KEY_VIOLATION', message, details);
  }
}

/** The server broke a deadlock by failing this transaction. Retry the whole transaction. */
export class DeadlockError extends DatabaseError {
  constructor(message: string, details: DatabaseErrorDetails) {
    super('DEADLOCK', message, details, true);
  }
}

/** A serializable (or repeatable read) transaction conflicted. Retry the whole transaction. */
export class SerializationFailureError extends DatabaseError {
  constructor(message: string, details: DatabaseErrorDetails) {
    super('SERIALIZATION_FAILURE', message, details, true);
  }
}

/**
 * A transaction asked to commit was rolled back instead: a statement in it had failed (on
 * PostgreSQL, any error aborts the whole transaction, even one the code caught), or a
 * nested transaction could not be undone to its savepoint. Nothing of it was written.
 */
export class TransactionRolledBackError extends DatabaseError {
  constructor(message: string, details: DatabaseErrorDetails) {
    super('TRANSACTION_ROLLED_BACK', message, details);
  }
}

/** A statement ran past its deadline and was cancelled on the server. */
export class QueryTimeoutError extends SluiceError {
  readonly timeoutMs: number;

  constructor(timeoutMs: number) {
    super(
      'QUERY_TIMEOUT',
      `The query did not finish within its ${timeoutMs} ms deadline and was cancelled on the server.`,
    );
    this.timeoutMs = timeoutMs;
  }
}

/**
 * Connecting failed. `code` is `AUTH_FAILED` (wrong user or password), `UNKNOWN_DATABASE`,
 * `CANNOT_OPEN` (SQLite: a missing directory, no permission, a file that is not a
 * database), all `permanent` (retrying cannot help, so the pool fails waiters at once), or
 * `CONNECTION_FAILED` (refused, unreachable, reset: transient, retried with backoff).
 */
export class ConnectionError extends SluiceError {
  /** Read by the pool: a permanent error fails waiting callers at once instead of retrying. */
  readonly permanent: boolean;
  readonly sqlState: string | undefined;
  readonly errno: number | undefined;
  readonly driverCode: string | undefined;

  constructor(
    code: 'AUTH_FAILED' | 'UNKNOWN_DATABASE' | 'CANNOT_OPEN' | 'CONNECTION_FAILED',
    message: string,
    details: DatabaseErrorDetails,
  ) {
    super(code, message, { cause: details.cause });
    this.permanent = code !== 'CONNECTION_FAILED';
    this.sqlState = details.sqlState;
    this.errno = details.errno;
    this.driverCode = details.driverCode;
  }
}

/** The connection broke while a statement ran on it (killed by the server, network lost). */
export class ConnectionLostError extends SluiceError {
  constructor(message: string, options: { readonly cause: unknown }, code: 'CONNECTION_LOST' | 'NOT_STARTED' = 'CONNECTION_LOST') {
    super(code, message, options);
  }
}

/**
 * The connection was lost before this statement started: it never reached the database, so
 * it is safe to retry, even a write. (Code `NOT_STARTED`; a `ConnectionLostError`, so code
 * that handles lost connections handles it too.) Raised for statements queued behind one
 * whose worker thread was terminated or died.
 */
export class NotStartedError extends ConnectionLostError {
  constructor(message: string, options: { readonly cause: unknown }) {
    super(message, options, 'NOT_STARTED');
  }
}
