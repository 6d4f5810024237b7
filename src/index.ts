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
export type { CancelSignal, DriverConnection, RunOptions, StatementResult } from './drivers/driver.js';
// Hosting a blocking driver of your own in worker threads (see blocking-driver.ts).
export type {
  BlockingConnection,
  BlockingErrorShape,
  BlockingResult,
  OpenBlockingConnection,
} from './drivers/offload/blocking-driver.js';
export {
  OffloadModuleError,
  startOffloadedConnection,
  type OffloadedConnection,
  type OffloadWorkerOptions,
} from './drivers/offload/offload-host.js';
export {
  connect,
  type ConnectOptions,
  type ConnectPoolOptions,
  type Database,
  type SqliteConnectOptions,
  type TransactionOptions,
} from './orm/connect.js';
export { withDeadline, type DeadlineOptions } from './orm/deadline-scope.js';
export {
  migrate,
  migrateDown,
  migrateToLatest,
  migrateUp,
  migrationStatus,
  type MigratableDatabase,
  type MigrationOptions,
  type MigrationSource,
  type MigrationTarget,
} from './orm/migrate/migrate.js';
export { MigrationError, MigrationLockTimeoutError, MigrationsInvalidError } from './orm/migrate/migration-errors.js';
export type { MigrationEvent, MigrationOutcome, MigrationRun, MigrationState } from './orm/migrate/migration-outcome.js';
export { makeMigration } from './orm/migrate/migration-file.js';
export { sql } from 'kysely';
// Models and relations (see README, "Models and relations").
export * from './orm/model/index.js';
export { currentKysely } from './orm/connect.js';
// The query cache's types (createQueryCache itself is in 'sluice/redis': it takes an ioredis client).
export type { AnyQueryCache, CacheableQuery, CachedQueryOptions, QueryCache, QueryCacheStats } from './orm/cache/index.js';
