/**
 * sluice/testing for vitest: a global setup that prepares the run once (servers found,
 * templates migrated), and test fixtures that hand each test a ready database: the test
 * file's own, inside a transaction rolled back after the test.
 *
 * ```ts
 * // vitest.config.ts: test: { globalSetup: ['./test/global-setup.ts'] }
 * // test/global-setup.ts
 * export default sluiceGlobalSetup({ backends: ['postgres', 'sqlite'], migrations: { folder: './migrations' } });
 * // test/users.test.ts
 * const test = sluiceTest<DB>('postgres');
 * test('adds a user', async ({ db }) => { ... });
 * ```
 */
import type { Kysely } from 'kysely';
import { inject, test as baseTest, type TestAPI } from 'vitest';
import type { TestProject } from 'vitest/node';
import { SluiceError } from '../errors.js';
import type { ConnectOptions, Database } from '../orm/connect.js';
import { NoTestServerError } from './errors.js';
import { createTestDatabase, type TestDatabase, type TestDatabaseOptions } from './test-database.js';
import { type BackendPlan, type SqlBackend, startTestRun, type TestBackend, type TestRunOptions, type TestRunPlan } from './test-run.js';
import { beginTestTransaction } from './test-transaction.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** The test run sluice's global setup prepared (see sluiceGlobalSetup). */
    readonly sluiceTestRun: TestRunPlan;
  }
}

/**
 * vitest's global setup for sluice/testing: `export default sluiceGlobalSetup({...})` in the
 * file that vitest's `test.globalSetup` names. Finds the servers once per run (environment
 * variable, local server, testcontainers), migrates one template per SQL backend, and at the
 * end drops the run's databases and stops its containers.
 */
export function sluiceGlobalSetup<DB = unknown>(options: TestRunOptions<DB>): (project: TestProject) => Promise<() => Promise<void>> {
  return async (project) => {
    const run = await startTestRun(options);
    project.provide('sluiceTestRun', run.plan);
    return () => run.teardown();
  };
}

/** The plan the global setup made, in a test worker. */
export function testRunPlan(): TestRunPlan {
  const plan = inject('sluiceTestRun') as TestRunPlan | undefined;
  if (plan === undefined) {
    throw new SluiceError(
      'TEST_RUN_NOT_PREPARED',
      "sluice/testing: the test run was not prepared: name a file that exports sluiceGlobalSetup({...}) in vitest's test.globalSetup.",
    );
  }
  return plan;
}

function backendPlan(backend: TestBackend): BackendPlan {
  const plan = testRunPlan().backends[backend];
  if (plan === undefined) {
    throw new SluiceError(
      'TEST_BACKEND_NOT_PREPARED',
      `sluice/testing: '${backend}' is not one of the global setup's backends: add it to sluiceGlobalSetup({ backends }).`,
    );
  }
  return plan;
}

/**
 * Why `backend`'s tests are skipped in this run, or `undefined` when it is available:
 * for `describe.skipIf(skipReason('mysql') !== undefined)`.
 */
export function skipReason(backend: TestBackend): string | undefined {
  const plan = backendPlan(backend);
  return plan.available ? undefined : plan.reason;
}

/**
 * The server's URL as found (for SQLite, the template file's), for tests that connect by
 * themselves: driver tests, a child process. `undefined` when the run found none (its tests
 * skip: `describe.skipIf(url === undefined)`). A test on it shares the server's database
 * with other files: use `openTestDatabase` or `sluiceTest` for a database of the file's own.
 */
export function testServerUrl(backend: TestBackend): string | undefined {
  const plan = backendPlan(backend);
  return plan.available ? plan.url : undefined;
}

/**
 * A new database for this test file (or for a `describe`), made from the run's template.
 * Call `drop()` when done (`afterAll`). For code that sets up in `beforeAll`; `sluiceTest`
 * does this itself.
 */
export async function openTestDatabase<DB>(backend: SqlBackend, options: TestDatabaseOptions = {}): Promise<TestDatabase<DB>> {
  const plan = backendPlan(backend);
  if (!plan.available) throw new NoTestServerError(backend, plan.reason, [plan.reason]);
  return createTestDatabase<DB>(plan.template!, options);
}

export interface SluiceTestOptions {
  /**
   * Runs each test in a transaction rolled back after it. Default true. Turn it off for
   * tests that need real commits seen by other connections (locks between two
   * transactions, a child process reading the test's rows); they then share the file's
   * database and clean up after themselves.
   */
  readonly transactional?: boolean;
  /** Options for the file's `connect()` (pool size, statement timeout). */
  readonly connect?: ConnectOptions;
}

/** What `sluiceTest` hands each test. */
export interface SluiceFixtures<DB> {
  /** The test file's database, inside the test's transaction (unless `transactional: false`). */
  readonly database: Database<DB>;
  /** `database.db`: plain Kysely. */
  readonly db: Kysely<DB>;
}

/** The file-scoped fixture: the file's database, or why there is none. */
type FileDatabase<DB> = { readonly made: TestDatabase<DB> } | { readonly missing: string };

/**
 * vitest's `test`, extended with `database` and `db` on `backend`: the test file gets a
 * database of its own, made from the run's template when the file's first test asks for
 * it and dropped after its last; each test runs in a transaction rolled back after it.
 * A backend the run found nowhere skips the test (the global setup said why, once).
 *
 * Tests that share a file's database in transactions run one at a time (vitest's default
 * within a file; not `test.concurrent`). Files run in parallel: each has its own database.
 */
export function sluiceTest<DB>(backend: SqlBackend, options: SluiceTestOptions = {}): TestAPI<SluiceFixtures<DB>> {
  const transactional = options.transactional ?? true;
  return baseTest
    .extend(
      'sluiceFileDatabase',
      { scope: 'file' },
      // vitest reads a fixture's first parameter: it must be a destructuring pattern, even an empty one.
      // eslint-disable-next-line no-empty-pattern
      async ({}, { onCleanup }): Promise<FileDatabase<DB>> => {
        const plan = backendPlan(backend);
        if (!plan.available) return { missing: plan.reason };
        const made = await createTestDatabase<DB>(plan.template!, options.connect);
        onCleanup(() => made.drop());
        return { made };
      },
    )
    .extend('database', async ({ sluiceFileDatabase, skip }, { onCleanup }): Promise<Database<DB>> => {
      if ('missing' in sluiceFileDatabase) return skip(sluiceFileDatabase.missing);
      const { database } = sluiceFileDatabase.made;
      if (transactional) {
        const transaction = await beginTestTransaction(database);
        onCleanup(() => transaction.rollback());
      }
      return database;
    })
    .extend('db', async ({ database }): Promise<Kysely<DB>> => database.db) as unknown as TestAPI<SluiceFixtures<DB>>;
}
