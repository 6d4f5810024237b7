/**
 * The service's transactions: `database.transaction`, run again when the database ended it
 * for a reason that a second run may well not meet (a deadlock, a serialization failure,
 * SQLite's busy timeout): such an error is `retryable` and nothing of the failed run was
 * written. Each run is bounded by the request's deadline, so retrying never outlives it.
 */
import type { Transaction } from 'kysely';
import { type Database, DatabaseError } from 'sluice';

const ATTEMPTS = 3;

export async function inTransaction<DB, T>(database: Database<DB>, work: (trx: Transaction<DB>) => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await database.transaction(work);
    } catch (error) {
      if (!(error instanceof DatabaseError && error.retryable) || attempt === ATTEMPTS) throw error;
    }
  }
}
