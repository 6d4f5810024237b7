import type { Database } from 'sluice';
import { sluiceTest } from 'sluice/testing/vitest';
import { expect } from 'vitest';
import type { DB } from '../../examples/service/src/schema.js';

// Each test file gets a database of its own, made from the run's migrated template;
// each test runs in a transaction that is rolled back after it.
const test = sluiceTest<DB>('postgres');

/** Code under test: it takes the database, as an application's code does. */
async function addAuthor(database: Database<DB>, name: string, email: string): Promise<number> {
  return database.transaction(async (trx) => {
    const { id } = await trx.insertInto('authors').values({ name, email }).returning('id').executeTakeFirstOrThrow();
    return id;
  });
}

test('an author added by the code under test is there', async ({ database, db }) => {
  const id = await addAuthor(database, 'Ada', 'ada@example.com');
  const author = await db.selectFrom('authors').select(['id', 'name']).where('email', '=', 'ada@example.com').executeTakeFirst();
  expect(author).toEqual({ id, name: 'Ada' });
});

test('the next test starts from the empty, migrated schema again', async ({ db }) => {
  expect(await db.selectFrom('authors').selectAll().execute()).toEqual([]);
});
