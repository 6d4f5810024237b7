import { connect, type Database } from '../orm/connect.js';

/**
 * Runs `work` on a database of one connection, closed afterwards: for the kit's few
 * statements (creating and dropping databases, migrating a template), never kept open.
 */
export async function withDatabase<T, DB = unknown>(url: string, work: (database: Database<DB>) => Promise<T>): Promise<T> {
  const database = connect<DB>(url, { pool: { max: 1 } });
  try {
    return await work(database);
  } finally {
    await database.close();
  }
}
