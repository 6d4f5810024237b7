/**
 * sluice/testing: integration tests against real databases. Finds a server (environment
 * variable, local server, testcontainers), migrates once per run into a template, gives
 * each test file a database of its own and each test a transaction rolled back after it.
 * The vitest pieces are in `sluice/testing/vitest`; this entry works with any runner.
 */
export { NoTestServerError, TestDatabaseError, TestIsolationError } from './errors.js';
export {
  describeUrl,
  findServer,
  SERVER_DEFAULTS,
  type FindServerOptions,
  type ResolvedServer,
  type ServerBackend,
  type ServerSettings,
  type ServerSource,
} from './servers.js';
export {
  startTestRun,
  type BackendPlan,
  type SqlBackend,
  type Template,
  type TestBackend,
  type TestRun,
  type TestRunOptions,
  type TestRunPlan,
} from './test-run.js';
export type { MysqlTable, MysqlTemplate } from './mysql-template.js';
export type { PostgresTemplate } from './postgres-template.js';
export type { SqliteTemplate } from './sqlite-template.js';
export { createTestDatabase, type TestDatabase, type TestDatabaseOptions } from './test-database.js';
export { beginTestTransaction, type TestTransaction } from './test-transaction.js';
