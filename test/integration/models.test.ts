import { type RawBuilder, sql } from 'kysely';
import { openTestDatabase, skipReason } from 'sluice/testing/vitest';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { ConnectionLostError, QueryTimeoutError } from '../../src/drivers/errors.js';
import { currentKysely, type Database } from '../../src/orm/connect.js';
import { ModelNotFoundError, models, type Repository } from '../../src/orm/model/index.js';
import type { TestDatabase } from 'sluice/testing';
import { clearTables, Comment, type DB, type Dialect, Post, Tag, User } from '../support/models-schema.js';

/** A condition that takes seconds to evaluate, per database, to be cut short by a deadline. */
const SLOW: Record<Dialect, RawBuilder<boolean>> = {
  postgres: sql<boolean>`(SELECT true FROM pg_sleep(10))`,
  mysql: sql<boolean>`SLEEP(10) = 0`,
  // Long enough to outlast the deadline, short enough to end soon after: a SQLite statement
  // is stopped by terminating its worker, whose native code runs the statement to its end,
  // holding the file's write lock if in a transaction (see sqlite-session.ts). 10^8 rows held
  // it past the next writer's 5 s busy timeout under the full suite's load.
  sqlite: sql<boolean>`(WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10000000) SELECT count(*) FROM c) > 0`,
};

for (const dialect of ['sqlite', 'postgres', 'mysql'] as const) {
  describe.skipIf(skipReason(dialect) !== undefined)(`models over ${dialect} (real database)`, () => {
    // A database of this describe's own, made by sluice/testing from the run's template (which
    // holds the models' tables). No per-test transaction: these tests count the pool's acquires
    // and the statements sent, which a test's transaction would change; tables are emptied instead.
    let testDatabase: TestDatabase<DB>;
    let database: Database<DB>;
    let users: Repository<typeof User>;
    let posts: Repository<typeof Post>;
    let comments: Repository<typeof Comment>;
    let tags: Repository<typeof Tag>;
    /** Every statement sent to the database, as the driver received it. */
    const sent: string[] = [];
    /** The statements `work` sends. */
    const statementsOf = async (work: () => Promise<unknown>): Promise<string[]> => {
      const from = sent.length;
      await work();
      return sent.slice(from);
    };

    /** Waits until no connection is lent (a cancelled statement's connection comes back once the server lets go). */
    const eventuallyIdle = async (): Promise<void> => {
      const until = Date.now() + 15_000; // a guard against a hang, not a timing assertion
      while (database.stats().inUse !== 0) {
        if (Date.now() > until) throw new Error(`connections still lent: ${JSON.stringify(database.stats())}`);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    };

    beforeAll(async () => {
      testDatabase = await openTestDatabase<DB>(dialect, { pool: { max: 4 } });
      database = testDatabase.database;
      // Counted where the statement leaves for the server: each connection's run().
      database.pool.on('create', ({ resource }) => {
        const run = resource.run.bind(resource);
        resource.run = (text, parameters, options) => {
          sent.push(text);
          return run(text, parameters, options);
        };
      });
      ({ users, posts, comments, tags } = models(database, { users: User, posts: Post, comments: Comment, tags: Tag }));
    });
    afterAll(() => testDatabase.drop());
    beforeEach(() => clearTables(database));

    /** 5 users (the last without posts), 3 posts each, 2 comments per post, tags on posts. */
    async function seed(): Promise<{ users: User[]; posts: Post[]; tags: Tag[] }> {
      const people = await users.insertMany(
        ['Ada', 'Grace', 'Edsger', 'Barbara', 'Alan'].map((name, i) => ({ name, email: `${name.toLowerCase()}@example.com`, age: 20 + i * 10, bio: null })),
      );
      const written = await posts.insertMany(
        people.slice(0, 4).flatMap((user) => [1, 2, 3].map((n) => ({ user_id: user.id, title: `${user.name} post ${n}` }))),
      );
      await comments.insertMany(written.flatMap((post) => [1, 2].map((n) => ({ post_id: post.id, body: `on ${post.title} #${n}` }))));
      const labels = await tags.insertMany([{ label: 'db' }, { label: 'ts' }, { label: 'math' }]);
      await database.db
        .insertInto('sluice_model_post_tags')
        .values(written.flatMap((post, i) => labels.filter((_, t) => (i + t) % 2 === 0).map((tag) => ({ post_id: post.id, tag_id: tag.id }))))
        .execute();
      return { users: people, posts: written, tags: labels };
    }

    test('queries built with Kysely come back as instances whose methods work', async () => {
      await seed();
      const found = await users.query((qb) => qb.where('age', '>', 30).orderBy('name').limit(2)).execute();
      expect(found.map((user) => user.name)).toEqual(['Alan', 'Barbara']);
      for (const user of found) expect(user).toBeInstanceOf(User);
      expect(found[0]!.displayName).toBe('Alan <alan@example.com>');
      expect(found[0]!.isAdult()).toBe(true);

      // Kysely's builder itself, rows as instances.
      const grace = await users.selectFrom().where('name', '=', 'Grace').executeTakeFirstOrThrow();
      expect(grace).toBeInstanceOf(User);
      expect(grace.displayName).toBe('Grace <grace@example.com>');

      // Joins, raw SQL conditions: still users, one per match, with only their own columns.
      const authors = await users
        .query((qb) =>
          qb
            .innerJoin('sluice_model_posts', 'sluice_model_posts.user_id', 'sluice_model_users.id')
            .where('sluice_model_posts.title', '=', 'Edsger post 2')
            .where(sql<boolean>`${sql.ref('sluice_model_users.age')} >= ${30}`),
        )
        .execute();
      expect(authors.map((user) => [user.name, user instanceof User])).toEqual([['Edsger', true]]);
      expect(Object.keys(authors[0]!).sort()).toEqual(['age', 'bio', 'email', 'id', 'name']);

      // Rows from raw SQL, made instances.
      const { rows } = await sql<DB['sluice_model_users'] & { id: number }>`SELECT * FROM sluice_model_users WHERE name = ${'Ada'}`.execute(database.db);
      const [ada] = users.hydrate(rows);
      expect(ada).toBeInstanceOf(User);
      expect(ada!.displayName).toBe('Ada <ada@example.com>');
      expect((await users.find(ada!.id))?.name).toBe('Ada');
      expect(await users.find(-1)).toBeUndefined();
    });

    test('insert gives back generated ids and defaults; insertMany in one statement, in order', async () => {
      const ada = await users.insert({ name: 'Ada', email: 'ada@example.com', age: 36, bio: null });
      expect(ada).toBeInstanceOf(User);
      expect(typeof ada.id).toBe('number');
      expect(ada.id).toBeGreaterThan(0);
      const sentByMany = await statementsOf(async () => {
        const written = await posts.insertMany([
          { user_id: ada.id, title: 'one' },
          { user_id: ada.id, title: 'two' },
          { user_id: ada.id, title: 'three' },
        ]);
        expect(written.map((post) => post.title)).toEqual(['one', 'two', 'three']);
        // The column default came back too.
        expect(written.map((post) => post.views)).toEqual([0, 0, 0]);
        const ids = written.map((post) => post.id);
        expect(new Set(ids).size).toBe(3);
        const stored = await database.db.selectFrom('sluice_model_posts').select(['id', 'title']).orderBy('id').execute();
        expect(stored).toEqual(written.map((post) => ({ id: post.id, title: post.title })));
      });
      // One INSERT (RETURNING); MySQL: the INSERT, then one read of the new rows.
      const inserts = sentByMany.filter((text) => /^insert/i.test(text));
      expect(inserts).toHaveLength(1);
    });

    // MySQL only: the others return generated ids with RETURNING.
    if (dialect === 'mysql') test('MySQL insertMany follows the server AUTO_INCREMENT step (multi-primary setups use 2 or more)', async () => {
      const ada = await users.insert({ name: 'Ada', email: 'ada@example.com', age: 36, bio: null });
      const written = await database.transaction(async () => {
        // On this transaction's connection only: as a multi-primary server would be set.
        await sql`SET SESSION auto_increment_increment = 2`.execute(currentKysely(database.db));
        try {
          return await posts.insertMany([
            { user_id: ada.id, title: 'x' },
            { user_id: ada.id, title: 'y' },
            { user_id: ada.id, title: 'z' },
          ]);
        } finally {
          await sql`SET SESSION auto_increment_increment = 1`.execute(currentKysely(database.db));
        }
      });
      expect(written.map((post) => post.title)).toEqual(['x', 'y', 'z']);
      const stored = await database.db.selectFrom('sluice_model_posts').select(['id', 'title']).where('title', 'in', ['x', 'y', 'z']).orderBy('id').execute();
      expect(written.map((post) => ({ id: post.id, title: post.title }))).toEqual(stored);
      expect(stored[1]!.id - stored[0]!.id).toBe(2);
    });

    test('update writes the changed columns only: a concurrent change to another column survives', async () => {
      const ada = await users.insert({ name: 'Ada', email: 'ada@example.com', age: 36, bio: null });
      // Someone else changes the age after we loaded the row.
      await database.db.updateTable('sluice_model_users').set({ age: 99 }).where('id', '=', ada.id).execute();
      ada.name = 'Ada Lovelace';
      const statements = await statementsOf(async () => expect(await users.update(ada)).toBe(1));
      expect(statements).toHaveLength(1);
      expect(statements[0]).toMatch(/name/);
      expect(statements[0]).not.toMatch(/age|email|bio/);
      const stored = await database.db.selectFrom('sluice_model_users').selectAll().where('id', '=', ada.id).executeTakeFirstOrThrow();
      expect(stored).toMatchObject({ name: 'Ada Lovelace', age: 99, email: 'ada@example.com' });
      // Saved means unchanged: nothing is sent again.
      expect(await statementsOf(async () => expect(await users.update(ada)).toBe(0))).toEqual([]);
      // A value set back to what was loaded is no change either.
      ada.bio = 'x';
      ada.bio = null;
      expect(await users.update(ada)).toBe(0);
    });

    test('delete removes the row; deleting or updating it again says it is gone', async () => {
      const ada = await users.insert({ name: 'Ada', email: 'ada@example.com', age: 36, bio: null });
      await users.delete(ada);
      expect(await users.find(ada.id)).toBeUndefined();
      const grace = await users.insert({ name: 'Grace', email: 'grace@example.com', age: 45, bio: null });
      await database.db.deleteFrom('sluice_model_users').where('id', '=', grace.id).execute();
      grace.age = 46;
      await expect(users.update(grace)).rejects.toBeInstanceOf(ModelNotFoundError);
      await expect(users.delete(grace)).rejects.toMatchObject({ code: 'MODEL_NOT_FOUND' });
    });

    test('eager loading sends one query per relation level, never one per row; nested paths work', async () => {
      const seeded = await seed();
      let loaded: Array<User & { posts: Array<Post & { comments: Comment[] }> }> = [];
      const statements = await statementsOf(async () => {
        loaded = await users.query((qb) => qb.orderBy('id')).with('posts.comments').execute();
      });
      // users, posts of all users, comments of all posts.
      expect(statements).toHaveLength(3);
      expect(statements[1]).toMatch(/ in \(/i);
      expect(loaded).toHaveLength(5);
      expect(loaded.map((user) => user.posts.length)).toEqual([3, 3, 3, 3, 0]);
      for (const user of loaded) {
        for (const post of user.posts) {
          expect(post).toBeInstanceOf(Post);
          expect(post.user_id).toBe(user.id);
          expect(post.comments.map((comment) => comment.body)).toEqual([`on ${post.title} #1`, `on ${post.title} #2`]);
          expect(post.comments[0]).toBeInstanceOf(Comment);
        }
      }
      expect(loaded[0]!.posts[0]!.slug).toBe('ada-post-1');
      // Loaded relations are not columns: updating a user with its posts loaded writes its own change only.
      loaded[0]!.age = 21;
      const update = await statementsOf(async () => expect(await users.update(loaded[0]!)).toBe(1));
      expect(update).toHaveLength(1);
      expect(update[0]).not.toMatch(/posts|name/);

      // belongs-to and many-to-many side by side: one query each.
      let withAuthors: Array<Post & { author: User | null; tags: Tag[] }> = [];
      const second = await statementsOf(async () => {
        withAuthors = await posts.query((qb) => qb.orderBy('id')).with('author').with('tags').execute();
      });
      expect(second).toHaveLength(3);
      expect(withAuthors.map((post) => post.author?.name)).toEqual(seeded.posts.map((post) => seeded.users.find((u) => u.id === post.user_id)!.name));
      expect(withAuthors[0]!.author).toBeInstanceOf(User);
      seeded.posts.forEach((_, i) => {
        const expected = seeded.tags.filter((_, t) => (i + t) % 2 === 0).map((tag) => tag.label);
        expect(withAuthors[i]!.tags.map((tag) => tag.label)).toEqual(expected);
        for (const tag of withAuthors[i]!.tags) expect(tag).toBeInstanceOf(Tag);
      });
      // The join table's key is not left on the tags.
      expect(Object.keys(withAuthors[0]!.tags[0]!).sort()).toEqual(['id', 'label']);

      // A dangling foreign key loads as null; no parents, no query.
      const orphan = await posts.insert({ user_id: 999_999, title: 'orphan' });
      const [withAuthor] = await posts.load([orphan], 'author');
      expect(withAuthor!.author).toBeNull();
      expect(await statementsOf(() => users.query((qb) => qb.where('id', '<', 0)).with('posts.comments').execute())).toHaveLength(1);
    });

    test('relations load onto instances already fetched, three levels deep in three queries', async () => {
      await seed();
      const fetched = await comments.query((qb) => qb.orderBy('id')).execute();
      let deep: Array<Comment & { post: (Post & { author: (User & { posts: Post[] }) | null }) | null }> = [];
      const statements = await statementsOf(async () => {
        deep = await comments.load(fetched, 'post.author.posts');
      });
      expect(statements).toHaveLength(3);
      expect(deep[0]!.post!.author!.name).toBe('Ada');
      expect(deep[0]!.post!.author!.posts.map((post) => post.title)).toEqual(['Ada post 1', 'Ada post 2', 'Ada post 3']);
    });

    test('inside database.transaction() models use the transaction; a rollback leaves nothing', async () => {
      const error = await database
        .transaction(async () => {
          const ada = await users.insert({ name: 'Ada', email: 'ada@example.com', age: 36, bio: null });
          await posts.insertMany([{ user_id: ada.id, title: 'draft' }]);
          ada.age = 37;
          await users.update(ada);
          // Uncommitted rows are visible only on the transaction's own connection.
          const [inside] = await users.query().with('posts').execute();
          expect(inside).toMatchObject({ name: 'Ada', age: 37 });
          expect(inside!.posts.map((post) => post.title)).toEqual(['draft']);
          expect((await users.selectFrom().execute()).map((user) => user.name)).toEqual(['Ada']);
          throw new Error('roll it back');
        })
        .catch((e: unknown) => e);
      expect(error).toMatchObject({ message: 'roll it back' });
      expect(await users.query().execute()).toEqual([]);
      expect(await posts.query().execute()).toEqual([]);

      // And committed when the work succeeds; a nested transaction rolls back to its savepoint.
      await database.transaction(async () => {
        await users.insert({ name: 'Grace', email: 'grace@example.com', age: 45, bio: null });
        await database
          .transaction(async () => {
            await users.insert({ name: 'Undone', email: 'u@example.com', age: 1, bio: null });
            throw new Error('inner only');
          })
          .catch(() => {});
      });
      expect((await users.query().execute()).map((user) => user.name)).toEqual(['Grace']);
    });

    test('withConnection: a unit of work waits for a connection once; transactions in it run on that connection', async () => {
      await seed();
      let acquires = 0;
      const counted = (): void => void acquires++;
      database.pool.on('acquire', counted);
      try {
        await users.query().with('posts.comments').execute();
        expect(acquires).toBe(3); // one per query, outside a scope

        acquires = 0;
        const loaded = await database.withConnection(() => users.query().with('posts.comments').execute());
        expect(acquires).toBe(1);
        expect(loaded.map((user) => user.posts.length)).toEqual([3, 3, 3, 3, 0]);
        expect(loaded[0]!.posts[0]!.comments).toHaveLength(2);

        acquires = 0;
        await database.withConnection(async () => {
          await database.transaction(async () => {
            await users.insert({ name: 'Kept', email: 'kept@example.com', age: 1, bio: null });
            // A nested call is a savepoint of the transaction on this connection.
            await database.transaction(() => users.insert({ name: 'Undone', email: 'undone@example.com', age: 1, bio: null }).then(() => Promise.reject(new Error('inner'))))
              .catch(() => {});
          });
          await expect(
            database.transaction(async () => {
              await users.insert({ name: 'RolledBack', email: 'rb@example.com', age: 1, bio: null });
              throw new Error('outer');
            }),
          ).rejects.toThrow('outer');
          // currentKysely, and a nested scope, are that same connection.
          await database.withConnection(() => sql`SELECT 1`.execute(currentKysely(database.db)));
          // A transaction that fails by its deadline leaves nothing open on the scope's
          // connection: what follows neither joins it nor commits its work.
          await expect(
            database.transaction(
              async () => {
                await users.insert({ name: 'TimedOut', email: 'timed-out@example.com', age: 1, bio: null });
                await users.selectFrom().where(SLOW[dialect]).execute();
              },
              { timeoutMs: 200 },
            ),
          ).rejects.toBeInstanceOf(QueryTimeoutError);
          if (dialect === 'sqlite') {
            // SQLite stops the statement by ending its worker thread, and the transaction
            // (rolled back by SQLite) with it: the scope's session is lost, as a server
            // connection killed under a scope would be.
            await expect(users.insert({ name: 'After', email: 'after@example.com', age: 1, bio: null })).rejects.toBeInstanceOf(ConnectionLostError);
            return;
          }
          await database.transaction(() => users.insert({ name: 'After', email: 'after@example.com', age: 1, bio: null }));
          await users.insert({ name: 'Plain', email: 'plain@example.com', age: 1, bio: null });
        });
        expect(acquires).toBe(1);
        const names = (await users.query().execute()).map((user) => user.name);
        expect(names).toEqual(expect.arrayContaining(dialect === 'sqlite' ? ['Kept'] : ['Kept', 'After', 'Plain']));
        expect(names).not.toContain('Undone');
        expect(names).not.toContain('RolledBack');
        expect(names).not.toContain('TimedOut');

        // Its deadline covers its queries; the connection goes back afterwards.
        const error = await database
          .withConnection(() => users.query((qb) => qb.where(SLOW[dialect])).execute(), { timeoutMs: 200 })
          .catch((e: unknown) => e);
        expect(error).toBeInstanceOf(QueryTimeoutError);
        await eventuallyIdle();
      } finally {
        database.pool.off('acquire', counted);
      }
    });

    test('a deadline cancels a model query with QUERY_TIMEOUT', async () => {
      await users.insert({ name: 'Ada', email: 'ada@example.com', age: 36, bio: null });
      const started = performance.now();
      const error = await database
        .withDeadline({ timeoutMs: 200 }, () => users.query((qb) => qb.where(SLOW[dialect])).with('posts').execute())
        .catch((e: unknown) => e);
      expect(error).toBeInstanceOf(QueryTimeoutError);
      expect(error).toMatchObject({ code: 'QUERY_TIMEOUT' });
      expect(performance.now() - started).toBeLessThan(5_000);
      // A transaction's deadline covers the model queries in it.
      const inTransaction = await database
        .transaction(() => users.selectFrom().where(SLOW[dialect]).execute(), { timeoutMs: 200 })
        .catch((e: unknown) => e);
      expect(inTransaction).toBeInstanceOf(QueryTimeoutError);
    });
  });
}
