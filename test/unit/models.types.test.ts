/**
 * Compile-time checks of the model API: `npm run typecheck` (tsc) verifies the
 * `@ts-expect-error` lines (an unused one is an error) and vitest runs the expectTypeOf ones.
 * Nothing here touches a database: the functions are only type-checked, never called.
 */
import { describe, expectTypeOf, test } from 'vitest';
import type { Database } from '../../src/orm/connect.js';
import { repository, type RelationPath } from '../../src/orm/model/index.js';
import { type Comment, type DB, Post, type Tag, User } from '../support/models-schema.js';

declare const database: Database<DB>;
declare const otherDatabase: Database<{ other: { id: number } }>;

// Only type-checked: calling it would need a database.
function checks(): void {
  const users = repository(database, User);
  const posts = repository(database, Post);
  // @ts-expect-error: User is a model of another schema
  repository(otherDatabase, User);

  // instances have the columns, typed, and the methods
  void (async () => {
    const [user] = await users.query((qb) => qb.where('age', '>', 30).orderBy('name').limit(10)).execute();
    expectTypeOf(user!).toEqualTypeOf<User>();
    expectTypeOf(user!.id).toEqualTypeOf<number>();
    expectTypeOf(user!.bio).toEqualTypeOf<string | null>();
    expectTypeOf(user!.displayName).toEqualTypeOf<string>();
    expectTypeOf(user!.isAdult()).toEqualTypeOf<boolean>();
    // @ts-expect-error: no such column
    void user!.nickname;
    const first = await users.selectFrom().where('id', '=', 1).executeTakeFirst();
    expectTypeOf(first!.displayName).toEqualTypeOf<string>();
    expectTypeOf(await users.find(1)).toEqualTypeOf<User | undefined>();
  })();

  // unknown columns and wrong value types in queries do not compile
  void (async () => {
    // @ts-expect-error: unknown column
    users.query((qb) => qb.where('nickname', '=', 'x'));
    // @ts-expect-error: age is a number
    users.query((qb) => qb.where('age', '=', 'thirty'));
    // @ts-expect-error: unknown column
    users.query((qb) => qb.orderBy('nickname'));
    // @ts-expect-error: unknown column
    void users.selectFrom().where('nickname', '=', 'x');
    // @ts-expect-error: find takes the primary key's type
    void users.find('1');
    // Joins keep Kysely's typing: the joined table's columns are known.
    users.query((qb) => qb.innerJoin('sluice_model_posts', 'sluice_model_posts.user_id', 'sluice_model_users.id').where('sluice_model_posts.title', '=', 'x'));
    // @ts-expect-error: the joined table has no such column
    users.query((qb) => qb.innerJoin('sluice_model_posts', 'sluice_model_posts.user_id', 'sluice_model_users.id').where('sluice_model_posts.nope', '=', 'x'));
  })();

  // writes take the table types
  void (async () => {
    const user = await users.insert({ name: 'Ada', email: 'ada@example.com', age: 36, bio: null });
    expectTypeOf(user).toEqualTypeOf<User>();
    // @ts-expect-error: name is a string
    void users.insert({ name: 1, email: 'x', age: 1, bio: null });
    // @ts-expect-error: unknown column
    void users.insert({ name: 'x', email: 'x', age: 1, bio: null, nickname: 'x' });
    // @ts-expect-error: email is required
    void users.insert({ name: 'x', age: 1, bio: null });
    expectTypeOf(await users.insertMany([{ name: 'x', email: 'x', age: 1, bio: null }])).toEqualTypeOf<User[]>();
    // @ts-expect-error: age is a number
    user.age = '36';
    // @ts-expect-error: a post is not a user
    void users.update(await posts.insert({ user_id: 1, title: 't' }));
  })();

  // relations: paths are checked, loaded relations are typed
  void (async () => {
    expectTypeOf<RelationPath<typeof User>>().toExtend<string>();
    const withPosts = await users.query().with('posts').execute();
    expectTypeOf(withPosts[0]!.posts).toEqualTypeOf<Post[]>();
    const nested = await users.query().with('posts.comments').execute();
    expectTypeOf(nested[0]!.posts[0]!.comments).toEqualTypeOf<Comment[]>();
    expectTypeOf(nested[0]!.posts[0]!.slug).toEqualTypeOf<string>();
    const authored = await posts.query().with('author').with('tags').execute();
    expectTypeOf(authored[0]!.author).toEqualTypeOf<User | null>();
    expectTypeOf(authored[0]!.tags).toEqualTypeOf<Tag[]>();
    // @ts-expect-error: no such relation
    users.query().with('comments');
    // @ts-expect-error: no such nested relation
    users.query().with('posts.likes');
    // @ts-expect-error: not loaded, so not there
    void withPosts[0]!.posts[0]!.comments;
    const loaded = await users.load(withPosts, 'posts.author');
    expectTypeOf(loaded[0]!.posts[0]!.author).toEqualTypeOf<User | null>();
  })();
}

describe('model types', () => {
  test('are checked by tsc (npm run typecheck)', () => {
    expectTypeOf(checks).toBeFunction();
  });
});
