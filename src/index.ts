export { SluiceError, InvalidOptionError } from './errors.js';
export * from './pool/index.js';
export {
  ConnectionError,
  ConnectionLostError,
  DatabaseError,
  DeadlockError,
  ForeignKeyViolationError,
  NotStartedError,
  QueryTimeoutError,
  SerializationFailureError,
  TransactionRolledBackError,
  UniqueViolationError,
} from './drivers/errors.js';
export type { DriverConnection, StatementResult } from './drivers/driver.js';
export {
  connect,
  type ConnectOptions,
  type ConnectPoolOptions,
  type Database,
  type SqliteConnectOptions,
  type TransactionOptions,
} from './orm/connect.js';
export { withDeadline, type DeadlineOptions } from './orm/deadline-scope.js';
export { sql } from 'kysely';
