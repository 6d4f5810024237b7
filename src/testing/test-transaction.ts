/**
 * Isolation per test: the test runs in a transaction that is rolled back afterwards, so
 * tests never see each other's rows. Every query made through the database joins it, from
 * whatever code makes it; transactions the code under test opens become savepoints in it
 * (see src/orm/pinned-transaction.ts for the details).
 */
import { type Database, pinTransaction } from '../orm/connect.js';
import { TestIsolationError } from './errors.js';

export interface TestTransaction {
  /**
   * Rolls back everything the test wrote. Rejects with a `TestIsolationError` when the
   * transaction was no longer open to roll back (MySQL committed it: a DDL statement; or
   * its connection was lost), so a test that leaks rows fails instead of passing quietly.
   */
  rollback(): Promise<void>;
}

/** Begins the test's transaction on `database` (one connection, held until `rollback()`). */
export async function beginTestTransaction<DB>(database: Database<DB>): Promise<TestTransaction> {
  const pin = await pinTransaction(database);
  return {
    async rollback() {
      const outcome = await pin.end();
      if (!outcome.rolledBack) {
        throw new TestIsolationError(
          `The test's transaction could not be rolled back: ${outcome.reason ?? 'unknown reason'}. ` +
            "What the test wrote may still be in this file's database; turn the transaction off for such a test " +
            '(transactional: false) and clean up after it.',
        );
      }
    },
  };
}
