/**
 * sluice/testing's per-test isolation, through its vitest fixtures, on SQLite, PostgreSQL
 * and MariaDB: each test runs in a transaction rolled back after it, which every query made
 * through the file's database joins, whoever makes it; the code's own transactions are
 * savepoints in it. The tables are the example service's, from the run's template.
 */
import { sql } from 'kysely';
import { connect, QueryTimeoutError, UniqueViolationError } from 'sluice';
import { sluiceTest, testServerUrl } from 'sluice/testing/vitest';
import { describe, expect } from 'vitest';
import type { DB } from '../../examples/service/src/schema.js';

const author = (name: string) => ({ name, email: `${name.toLowerCase()}@example.com` });

for (const dialect of ['sqlite', 'postgres', 'mysql'] as const) {
  const test = sluiceTest<DB>(dialect);

  describe(`per-test transactions on ${dialect} (sluice/testing)`, () => {
    const names = async (db: import('kysely').Kysely<DB>): Promise<string[]> =>
      (await db.selectFrom('authors').select('name').orderBy('name').execute()).map((row) => row.name);

    // Declared to fail: vitest passes it only if it does. The next test checks what it left.
    test.fails('a test that fails half way, after writes and a committed transaction of the code ...', async ({ db, database }) => {
      await db.insertInto('authors').values(author('Leaked')).execute();
      await database.transaction((trx) => trx.insertInto('authors').values(author('Committed')).execute());
      expect(await names(db)).toEqual(['Committed', 'Leaked']);
      throw new Error('the test fails here');
    });

    test('... leaves nothing for the next test', async ({ db }) => {
      expect(await names(db)).toEqual([]);
      // The migrated schema is there (the run's template), with its migration recorded.
      const migrations = await db.selectFrom('kysely_migration' as never).select(sql<string>`name`.as('name')).execute();
      expect(migrations).toHaveLength(1);
    });

    test("the code's transactions are savepoints: a failed one undoes its own writes only, nested ones too", async ({ db, database }) => {
      await db.insertInto('authors').values(author('Before')).execute();
      await expect(
        database.transaction(async (trx) => {
          await trx.insertInto('authors').values(author('Undone')).execute();
          throw new Error('roll this one back');
        }),
      ).rejects.toThrow('roll this one back');
      await database.transaction(async (trx) => {
        await trx.insertInto('authors').values(author('Outer')).execute();
        await database
          .transaction(async (inner) => {
            await inner.insertInto('authors').values(author('Inner')).execute();
            throw new Error('inner only');
          })
          .catch(() => {});
      });
      expect(await names(db)).toEqual(['Before', 'Outer']);
    });

    test('an error does not end the test: after a unique violation the test goes on querying', async ({ db }) => {
      await db.insertInto('authors').values(author('Ada')).execute();
      await expect(db.insertInto('authors').values(author('Ada')).execute()).rejects.toBeInstanceOf(UniqueViolationError);
      await db.insertInto('authors').values(author('Grace')).execute();
      expect(await names(db)).toEqual(['Ada', 'Grace']);
    });

    test('a transaction of the code that caught an error of its own is not committed (as outside a test)', async ({ db, database }) => {
      await db.insertInto('authors').values(author('Ada')).execute();
      const outcome = await database
        .transaction(async (trx) => {
          await trx.insertInto('authors').values(author('Grace')).execute();
          await trx.insertInto('authors').values(author('Ada')).execute().catch(() => {});
        })
        .then(
          () => 'committed',
          (error: unknown) => (error as { code?: string }).code,
        );
      // PostgreSQL aborts the whole transaction at its first error; the others undo the statement only.
      if (dialect === 'postgres') {
        expect(outcome).toBe('TRANSACTION_ROLLED_BACK');
        expect(await names(db)).toEqual(['Ada']);
      } else {
        expect(outcome).toBe('committed');
        expect(await names(db)).toEqual(['Ada', 'Grace']);
      }
    });

    test('a caller waits while another holds the connection, as for a pool of one; queries inside the holder share it', async ({ db, database }) => {
      const events: string[] = [];
      let letGo!: () => void;
      const holding = new Promise<void>((resolve) => (letGo = resolve));
      let started!: () => void;
      const begun = new Promise<void>((resolve) => (started = resolve));
      const holder = database.transaction(async (trx) => {
        await trx.insertInto('authors').values(author('Held')).execute();
        // A query on database.db inside the transaction shares its connection instead of waiting for itself.
        events.push(`inside sees ${(await names(db)).join(',')}`);
        started();
        await holding;
        events.push('holder commits');
      });
      await begun;
      const outside = names(db).then((seen) => events.push(`outside sees ${seen.join(',')}`));
      await new Promise((resolve) => setTimeout(resolve, 50));
      letGo();
      await Promise.all([holder, outside]);
      expect(events).toEqual(['inside sees Held', 'holder commits', 'outside sees Held']);
    });

    test('withConnection scopes and streams run in the test transaction too', async ({ db, database }) => {
      await db.insertInto('authors').values([author('A'), author('B'), author('C')]).execute();
      const seen = await database.withConnection(async () => names(db));
      expect(seen).toEqual(['A', 'B', 'C']);
      if (dialect === 'sqlite') return; // no streams on SQLite yet
      const streamed: string[] = [];
      for await (const row of db.selectFrom('authors').select('name').orderBy('name').stream(2)) streamed.push(row.name);
      expect(streamed).toEqual(['A', 'B', 'C']);
    });

    if (dialect !== 'sqlite') {
      test('a deadline cancels the statement on the server, and the test goes on with its writes', async ({ db, database }) => {
        await db.insertInto('authors').values(author('Kept')).execute();
        const slow = dialect === 'postgres' ? sql`SELECT pg_sleep(30)` : sql`SELECT SLEEP(30)`;
        const marker = `sluice_testing_slow_${dialect}`;
        const error = await database
          .withDeadline({ timeoutMs: 300 }, () => sql`${slow} /* ${sql.raw(marker)} */`.execute(db))
          .catch((e: unknown) => e);
        expect(error).toBeInstanceOf(QueryTimeoutError);
        // Seen from another connection: the statement is no longer running on the server.
        const observer = connect<unknown>(testServerUrl(dialect)!, { pool: { max: 1 } });
        try {
          const running = async (): Promise<number> => {
            const { rows } =
              dialect === 'postgres'
                ? await sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_stat_activity WHERE state = 'active' AND query LIKE ${`%${marker}%`} AND pid <> pg_backend_pid()`.execute(observer.db)
                : await sql<{ n: number }>`SELECT count(*) AS n FROM information_schema.processlist WHERE info LIKE ${`%${marker}%`} AND id <> CONNECTION_ID()`.execute(observer.db);
            return Number(rows[0]!.n);
          };
          const until = Date.now() + 10_000; // a guard against a hang, not a timing assertion
          while ((await running()) > 0 && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 50));
          expect(await running()).toBe(0);
        } finally {
          await observer.close();
        }
        await db.insertInto('authors').values(author('After')).execute();
        expect(await names(db)).toEqual(['After', 'Kept']);
      });
    }

    test("the file's database is its own: made from the template, not the server's shared one", async ({ db }) => {
      const name =
        dialect === 'postgres'
          ? (await sql<{ name: string }>`SELECT current_database() AS name`.execute(db)).rows[0]!.name
          : dialect === 'mysql'
            ? (await sql<{ name: string }>`SELECT DATABASE() AS name`.execute(db)).rows[0]!.name
            : (await sql<{ file: string }>`SELECT file FROM pragma_database_list WHERE name = 'main'`.execute(db)).rows[0]!.file;
      expect(name).toMatch(/sluice_t[0-9a-z]{9}[0-9a-f]{4}_[0-9a-f]{8}/);
    });
  });
}
