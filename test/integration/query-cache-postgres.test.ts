/**
 * The query cache on real PostgreSQL and real Redis: hits and misses counted as statements
 * Kysely sent, invalidation by the writes made through sluice (db, models, transactions, a
 * second process), single flight, and Redis failing for real (a closed port, a stalled proxy).
 */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { CamelCasePlugin, type Generated, type Kysely, sql, type LogEvent } from 'kysely';
import type { TestDatabase } from 'sluice/testing';
import { openTestDatabase, skipReason, testServerUrl } from 'sluice/testing/vitest';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { InvalidOptionError } from '../../src/errors.js';
import { createQueryCache, QueryCacheError, type QueryCache, type QueryCacheOptions } from '../../src/orm/cache/index.js';
import { connect, currentKysely, type Database, pinTransaction } from '../../src/orm/connect.js';
import { models, type Repository } from '../../src/orm/model/index.js';
import { clearTables, type DB as ModelDB, User } from '../support/models-schema.js';
import { closedPort, eventually } from './fault-helpers.js';
import { TcpProxy } from './tcp-proxy.js';

const redisUrl = testServerUrl('redis') ?? '';

interface ValuesTable {
  qc_values: { id: Generated<number>; at: Date; data: Buffer; meta: unknown; note: string | null };
}
type DB = ModelDB & ValuesTable;

describe.skipIf(redisUrl === '' || skipReason('postgres') !== undefined)('query cache over PostgreSQL and Redis (real servers)', () => {
  let testDatabase: TestDatabase<DB>;
  let database: Database<DB>;
  let users: Repository<typeof User>;
  let redis: Redis;
  let prefix: string;
  const caches: Array<QueryCache<DB>> = [];
  const clients: Redis[] = [];
  const proxies: TcpProxy[] = [];
  const others: Array<Database<DB>> = [];
  /** SELECTs Kysely sent to PostgreSQL (answered or failed). */
  let selects = 0;
  const countSelects = (event: LogEvent): void => {
    // Failed ones too (Kysely logs them at 'error').
    if (/^\s*(select|with)\b/i.test(event.query.sql)) selects++;
  };
  const cacheOf = (options: Partial<QueryCacheOptions> = {}, on: Database<DB> = database): QueryCache<DB> => {
    const cache = createQueryCache(on, { redis, prefix, ...options });
    caches.push(cache);
    return cache;
  };
  const selectsOf = async <T>(work: () => Promise<T>): Promise<{ result: T; selects: number }> => {
    const from = selects;
    const result = await work();
    return { result, selects: selects - from };
  };
  const usersByName = () => database.db.selectFrom('sluice_model_users').select(['name']).orderBy('name');
  const names = (rows: ReadonlyArray<{ name: string }>): string[] => rows.map((row) => row.name);
  const version = (table: string): Promise<string | null> => redis.get(`${prefix}:v:${table}`);
  const entryKeys = async (): Promise<string[]> => redis.keys(`${prefix}:q:*`);

  beforeAll(async () => {
    testDatabase = await openTestDatabase<DB>('postgres', { pool: { max: 6 }, log: countSelects });
    database = testDatabase.database;
    await sql`CREATE TABLE qc_values (id serial PRIMARY KEY, at timestamptz NOT NULL, data bytea NOT NULL, meta jsonb, note text)`.execute(database.db);
    ({ users } = models(database as unknown as Database<ModelDB>, { users: User }));
    redis = new Redis(redisUrl, { lazyConnect: true });
    await redis.connect();
  });
  afterAll(async () => {
    redis?.disconnect();
    await testDatabase?.drop();
  });
  beforeEach(async () => {
    prefix = `sluice-test:qc:${randomBytes(6).toString('hex')}`;
    await clearTables(database as unknown as Database<ModelDB>);
  });
  afterEach(async () => {
    for (const cache of caches.splice(0)) cache.close();
    for (const client of clients.splice(0)) client.disconnect();
    for (const proxy of proxies.splice(0)) await proxy.close();
    for (const other of others.splice(0)) await other.close();
    const keys = await redis.keys(`${prefix}:*`);
    if (keys.length > 0) await redis.del(...keys);
  });

  async function seed(...people: string[]): Promise<void> {
    await users.insertMany(people.map((name, i) => ({ name, email: `${name.toLowerCase()}@example.com`, age: 30 + i, bio: null })));
  }

  test('a miss runs the query and stores it; a hit answers from Redis without a query', async () => {
    await seed('Ada', 'Grace');
    const cache = cacheOf();
    const first = await selectsOf(() => cache.execute(usersByName()));
    expect(names(first.result)).toEqual(['Ada', 'Grace']);
    expect(first.selects).toBe(1);
    const second = await selectsOf(() => cache.execute(usersByName()));
    expect(second.result).toEqual(first.result);
    expect(second.selects).toBe(0);
    // Another query (other parameters) is another entry.
    const other = await selectsOf(() => cache.executeTakeFirst(usersByName().where('name', '=', 'Grace')));
    expect(other.result).toEqual({ name: 'Grace' });
    expect(other.selects).toBe(1);
    expect(cache.stats()).toMatchObject({ hits: 1, misses: 2, singleFlightJoins: 0, bypassed: 0, errors: 0 });
  });

  test('an entry is stored with its TTL (PX); table versions have none', async () => {
    await seed('Ada');
    const cache = cacheOf({ ttlMs: 30_000 });
    await cache.execute(usersByName());
    await cache.execute(usersByName().where('name', '=', 'Ada'), { ttlMs: 5_000 });
    const ttls = (await Promise.all((await entryKeys()).map((key) => redis.pttl(key)))).sort((a, b) => a - b);
    expect(ttls).toHaveLength(2);
    expect(ttls[0]).toBeGreaterThan(0);
    expect(ttls[0]).toBeLessThanOrEqual(5_000);
    expect(ttls[1]).toBeGreaterThan(5_000);
    expect(ttls[1]).toBeLessThanOrEqual(30_000);
    expect(await redis.pttl(`${prefix}:v:sluice_model_users`)).toBe(-1);
  });

  test('inserts, updates and deletes through database.db invalidate, and the writer reads its write at once', async () => {
    await seed('Ada');
    const cache = cacheOf();
    expect(names(await cache.execute(usersByName()))).toEqual(['Ada']);
    await database.db.insertInto('sluice_model_users').values({ name: 'Grace', email: 'g@example.com', age: 40, bio: null }).execute();
    expect(names(await cache.execute(usersByName()))).toEqual(['Ada', 'Grace']);
    await database.db.updateTable('sluice_model_users').set({ name: 'Barbara' }).where('name', '=', 'Ada').execute();
    expect(names(await cache.execute(usersByName()))).toEqual(['Barbara', 'Grace']);
    await database.db.deleteFrom('sluice_model_users').where('name', '=', 'Grace').execute();
    expect(names(await cache.execute(usersByName()))).toEqual(['Barbara']);
    // A write to another table leaves this entry alone.
    await database.db.insertInto('sluice_model_tags').values({ label: 'x' }).execute();
    const after = await selectsOf(() => cache.execute(usersByName()));
    expect(after.selects).toBe(0);
  });

  test('writes through a model repository invalidate; cached instances are the model, and update() writes only changed columns', async () => {
    await seed('Ada', 'Grace');
    const cache = cacheOf();
    const byAge = users.query((qb) => qb.where('age', '>=', 30).orderBy('name')).cached(cache, { ttlMs: 10_000 });
    const first = await selectsOf(() => byAge.execute());
    const second = await selectsOf(() => byAge.execute());
    expect(first.selects).toBe(1);
    expect(second.selects).toBe(0);
    const [ada] = second.result;
    expect(ada).toBeInstanceOf(User);
    expect(ada!.displayName).toBe('Ada <ada@example.com>');
    // Another caller changes the email meanwhile: update() must write the name only.
    await database.db.updateTable('sluice_model_users').set({ email: 'changed@example.com' }).where('id', '=', ada!.id).execute();
    ada!.name = 'Augusta';
    expect(await users.update(ada!)).toBe(1);
    const row = await database.db.selectFrom('sluice_model_users').selectAll().where('id', '=', ada!.id).executeTakeFirstOrThrow();
    expect(row).toMatchObject({ name: 'Augusta', email: 'changed@example.com' });
    // The repository's update invalidated the cached query.
    expect((await byAge.execute()).map((user) => user.name)).toEqual(['Augusta', 'Grace']);
    // find() through the cache, and the repository's insert and delete.
    const found = await users.find(ada!.id, { cache });
    expect(found).toBeInstanceOf(User);
    expect((await selectsOf(() => users.find(ada!.id, { cache }))).selects).toBe(0);
    await users.delete(found!);
    expect(await users.find(ada!.id, { cache })).toBeUndefined();
    await users.insert({ name: 'Edsger', email: 'e@example.com', age: 50, bio: null });
    expect((await byAge.execute()).map((user) => user.name)).toEqual(['Edsger', 'Grace']);
  });

  test('a transaction: its writes are not visible or invalidated before COMMIT, and are after', async () => {
    await seed('Ada');
    const cache = cacheOf();
    await cache.execute(usersByName());
    const before = await version('sluice_model_users');
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let written!: () => void;
    const wrote = new Promise<void>((resolve) => (written = resolve));
    const transaction = database.transaction(async (trx) => {
      await trx.insertInto('sluice_model_users').values({ name: 'Grace', email: 'g@example.com', age: 40, bio: null }).execute();
      // Read inside the transaction: its own write, not the cached result.
      expect(names(await cache.execute(trx.selectFrom('sluice_model_users').select(['name']).orderBy('name')))).toEqual(['Ada', 'Grace']);
      written();
      await held;
    });
    await wrote;
    // Outside, before COMMIT: the committed state, read from the database (the table is being written here).
    const outside = await selectsOf(() => cache.execute(usersByName()));
    expect(names(outside.result)).toEqual(['Ada']);
    expect(outside.selects).toBe(1);
    expect(await version('sluice_model_users')).toBe(before);
    release();
    await transaction;
    expect(await version('sluice_model_users')).not.toBe(before);
    expect(names(await cache.execute(usersByName()))).toEqual(['Ada', 'Grace']);
    // Nothing read inside the transaction, or while it wrote, was stored.
    expect(cache.stats().bypassed).toBe(2);
  });

  test('a rolled-back transaction does not invalidate', async () => {
    await seed('Ada');
    const cache = cacheOf();
    await cache.execute(usersByName());
    const before = await version('sluice_model_users');
    await expect(
      database.transaction(async (trx) => {
        await trx.insertInto('sluice_model_users').values({ name: 'Grace', email: 'g@example.com', age: 40, bio: null }).execute();
        throw new Error('undo');
      }),
    ).rejects.toThrow('undo');
    expect(await version('sluice_model_users')).toBe(before);
    const after = await selectsOf(() => cache.execute(usersByName()));
    expect(names(after.result)).toEqual(['Ada']);
    expect(after.selects).toBe(0);
  });

  test('rows read on a Kysely transaction (not database.transaction) are not stored', async () => {
    await seed('Ada');
    const cache = cacheOf();
    await database.db.transaction().execute(async (trx) => {
      await trx.insertInto('sluice_model_users').values({ name: 'Uncommitted', email: 'u@example.com', age: 1, bio: null }).execute();
      expect(names(await cache.execute(trx.selectFrom('sluice_model_users').select(['name']).orderBy('name')))).toEqual(['Ada', 'Uncommitted']);
    });
    expect(await entryKeys()).toEqual([]);
  });

  test('a second process (another connect() and Redis client) hears of the first one\'s writes', async () => {
    await seed('Ada');
    const cache = cacheOf();
    const otherDatabase = connect<DB>(testDatabase.url);
    others.push(otherDatabase);
    const otherRedis = new Redis(redisUrl);
    clients.push(otherRedis);
    const otherCache = createQueryCache(otherDatabase, { redis: otherRedis, prefix });
    caches.push(otherCache);
    const otherQuery = () => otherDatabase.db.selectFrom('sluice_model_users').select(['name']).orderBy('name');
    expect(names(await otherCache.execute(otherQuery()))).toEqual(['Ada']);
    // The same query from the first process is served the second one's entry.
    const shared = await selectsOf(() => cache.execute(usersByName()));
    expect(shared.selects).toBe(0);
    expect(cache.stats().hits).toBe(1);
    await users.insert({ name: 'Grace', email: 'g@example.com', age: 40, bio: null });
    expect(names(await otherCache.execute(otherQuery()))).toEqual(['Ada', 'Grace']);
    await otherDatabase.db.deleteFrom('sluice_model_users').where('name', '=', 'Ada').execute();
    expect(names(await cache.execute(usersByName()))).toEqual(['Grace']);
  });

  test('single flight: concurrent misses of one key run one query; each caller gets its own rows', async () => {
    await seed('Ada');
    const cache = cacheOf();
    // Slow enough that every caller's Redis read has answered before it ends.
    const slow = () =>
      database.db.selectFrom('sluice_model_users').select(['name', sql<Date>`now()`.as('at')]).where(sql<boolean>`pg_sleep(0.3) IS NOT NULL`);
    const { result, selects: ran } = await selectsOf(() => Promise.all(Array.from({ length: 10 }, () => cache.execute(slow()))));
    expect(ran).toBe(1);
    expect(cache.stats()).toMatchObject({ misses: 1, singleFlightJoins: 9, hits: 0 });
    expect(new Set(result.map((rows) => rows[0]!.at.getTime())).size).toBe(1);
    // Copies, not one array shared: a caller editing its rows does not change another's.
    expect(result[1]).not.toBe(result[2]);
    expect(result[1]![0]!.at).not.toBe(result[2]![0]!.at);
  });

  test('a failed query is shared by those who joined it, and not cached', async () => {
    const cache = cacheOf();
    const failing = () => database.db.selectFrom('sluice_model_users').select(['name']).where(sql<boolean>`pg_sleep(0.2) IS NOT NULL AND 1 / 0 = 1`);
    const outcomes = await selectsOf(() => Promise.allSettled(Array.from({ length: 4 }, () => cache.execute(failing()))));
    expect(outcomes.selects).toBe(1);
    expect(outcomes.result.every((outcome) => outcome.status === 'rejected')).toBe(true);
    expect(await entryKeys()).toEqual([]);
  });

  test('Date, Buffer and JSON values come back from the cache exactly as from the database', async () => {
    const at = new Date('2024-02-29T12:34:56.789Z');
    await database.db
      .insertInto('qc_values')
      .values({ at, data: Buffer.from([0, 1, 2, 250, 255]), meta: JSON.stringify({ n: 1, nested: { $sluice: 'date', v: '0' } }), note: null })
      .execute();
    const cache = cacheOf();
    const query = () => database.db.selectFrom('qc_values').selectAll();
    const fresh = await cache.execute(query());
    const cached = await selectsOf(() => cache.execute(query()));
    expect(cached.selects).toBe(0);
    expect(cached.result).toEqual(fresh);
    const row = cached.result[0]!;
    expect(row.at).toBeInstanceOf(Date);
    expect(row.at.getTime()).toBe(at.getTime());
    expect(Buffer.isBuffer(row.data)).toBe(true);
    expect([...row.data]).toEqual([0, 1, 2, 250, 255]);
    expect(row.meta).toEqual({ n: 1, nested: { $sluice: 'date', v: '0' } });
    expect(row.note).toBeNull();
  });

  test('raw SQL: refused without tables; with them, cached and invalidated by writes to them', async () => {
    await seed('Ada');
    const cache = cacheOf();
    const raw = sql<{ name: string }>`SELECT name FROM sluice_model_users ORDER BY name`;
    await expect(cache.execute(raw)).rejects.toThrow(InvalidOptionError);
    const fragment = usersByName().where(sql<boolean>`id IN (SELECT user_id FROM sluice_model_posts)`);
    await expect(cache.execute(fragment)).rejects.toThrow(/raw SQL/);
    await expect(cache.execute(database.db.selectNoFrom(sql<number>`1`.as('one')))).rejects.toThrow(/reads no table/);
    await expect(cache.execute(database.db.insertInto('sluice_model_tags').values({ label: 'x' }).returningAll() as never)).rejects.toThrow(/SELECTs only/);
    expect(names(await cache.execute(raw, { tables: ['sluice_model_users'] }))).toEqual(['Ada']);
    expect((await selectsOf(() => cache.execute(raw, { tables: ['sluice_model_users'] }))).selects).toBe(0);
    await users.insert({ name: 'Grace', email: 'g@example.com', age: 40, bio: null });
    expect(names(await cache.execute(raw, { tables: ['sluice_model_users'] }))).toEqual(['Ada', 'Grace']);
  });

  test('invalidate() covers writes sluice cannot see (raw SQL)', async () => {
    await seed('Ada');
    const cache = cacheOf();
    await cache.execute(usersByName());
    await sql`UPDATE sluice_model_users SET name = 'Raw'`.execute(database.db);
    // Not seen: the cached result stands...
    expect(names(await cache.execute(usersByName()))).toEqual(['Ada']);
    // ...until invalidated.
    await cache.invalidate(['public.sluice_model_users']);
    expect(names(await cache.execute(usersByName()))).toEqual(['Raw']);
  });

  test("a test's pinned transaction: its writes invalidate at once, and again when it is rolled back at its end", async () => {
    await seed('Ada');
    const cache = cacheOf();
    expect(names(await cache.execute(usersByName()))).toEqual(['Ada']);
    const pin = await pinTransaction(database);
    await users.insert({ name: 'Grace', email: 'g@example.com', age: 40, bio: null });
    expect(names(await cache.execute(usersByName()))).toEqual(['Ada', 'Grace']);
    expect((await pin.end()).rolledBack).toBe(true);
    // The cached result holding the test's row is not served after the rollback.
    expect(names(await cache.execute(usersByName()))).toEqual(['Ada']);
  });

  test('Redis on a closed port: reads and writes answer from the database, the failure is reported, nothing rejects', async () => {
    await seed('Ada');
    const down = new Redis({ host: '127.0.0.1', port: await closedPort(), lazyConnect: true, maxRetriesPerRequest: 1 });
    down.on('error', () => {});
    clients.push(down);
    const errors: QueryCacheError[] = [];
    const cache = cacheOf({ redis: down, redisTimeoutMs: 100, onError: (error) => errors.push(error) });
    for (let i = 0; i < 5; i++) expect(names(await cache.execute(usersByName()))).toEqual(['Ada']);
    await users.insert({ name: 'Grace', email: 'g@example.com', age: 40, bio: null });
    expect(names(await cache.execute(usersByName()))).toEqual(['Ada', 'Grace']);
    expect(errors.length).toBeGreaterThan(0);
    expect(errors.every((error) => error instanceof QueryCacheError)).toBe(true);
    expect(cache.stats()).toMatchObject({ hits: 0, misses: 0 });
    expect(cache.stats().bypassed).toBe(6);
  });

  test('Redis stalled: a read falls back to the database within its deadline; a write\'s invalidation is retried once Redis answers', async () => {
    await seed('Ada');
    const { hostname, port } = new URL(redisUrl);
    const proxy = await TcpProxy.start(hostname, Number(port || 6379));
    proxies.push(proxy);
    const through = new Redis({ host: '127.0.0.1', port: proxy.port });
    through.on('error', () => {});
    clients.push(through);
    const errors: QueryCacheError[] = [];
    // A Redis timeout far longer than the deadline: the deadline bounds the wait.
    const cache = cacheOf({ redis: through, redisTimeoutMs: 60_000, onError: (error) => errors.push(error) });
    expect(names(await cache.execute(usersByName()))).toEqual(['Ada']);
    const before = await version('sluice_model_users');
    proxy.setMode('stall');
    const read = await database.withDeadline({ timeoutMs: 2_000 }, () => cache.execute(usersByName()));
    expect(names(read)).toEqual(['Ada']);
    expect(errors.map((error) => error.code)).toEqual(['QUERY_CACHE_REDIS_TIMEOUT']);
    // A write while Redis is stalled: it succeeds; its invalidation is pending, and reads of
    // the table skip the cache in this process (they see the write).
    await database.withDeadline({ timeoutMs: 2_000 }, () => users.insert({ name: 'Grace', email: 'g@example.com', age: 40, bio: null }));
    expect(names(await cache.execute(usersByName()))).toEqual(['Ada', 'Grace']);
    expect(await version('sluice_model_users')).toBe(before);
    proxy.setMode('pass');
    // Guards (20 s) against a hang, not timing assertions.
    expect(await eventually(async () => (await version('sluice_model_users')) !== before, 20_000), 'the invalidation retried').toBe(true);
    // Back to normal: stored, then hit.
    expect(
      await eventually(async () => {
        await cache.execute(usersByName());
        return cache.stats().hits > 0;
      }, 20_000),
      'a hit after Redis came back',
    ).toBe(true);
    expect(names(await cache.execute(usersByName()))).toEqual(['Ada', 'Grace']);
  });

  test('a fractional ttlMs is stored (whole milliseconds for PX), not a Redis error at every store', async () => {
    await seed('Ada');
    const errors: QueryCacheError[] = [];
    const cache = cacheOf({ onError: (error) => errors.push(error) });
    expect(names(await cache.execute(usersByName(), { ttlMs: 1_500.5 }))).toEqual(['Ada']);
    const second = await selectsOf(() => cache.execute(usersByName(), { ttlMs: 1_500.5 }));
    expect(names(second.result)).toEqual(['Ada']);
    expect(second.selects).toBe(0);
    expect(errors).toEqual([]);
  });

  test('one SQL text cached with two different tables lists is two entries', async () => {
    const cache = cacheOf();
    // Versions made by one script start equal: both tables' versions are the same string.
    await cache.execute(sql<{ n: number }>`SELECT 1 AS n`, { tables: ['qc_dep_a', 'qc_dep_b'] });
    expect(await version('qc_dep_a')).toBe(await version('qc_dep_b'));
    const first = await selectsOf(() => cache.execute(sql<{ n: number }>`SELECT 2 AS n`, { tables: ['qc_dep_a'] }));
    expect(first.selects).toBe(1);
    // Depends on another table: not answered by the entry that depends on qc_dep_a.
    const second = await selectsOf(() => cache.execute(sql<{ n: number }>`SELECT 2 AS n`, { tables: ['qc_dep_b'] }));
    expect(second.selects).toBe(1);
  });

  test('storing a result waits for Redis no longer than the read\'s deadline allows', async () => {
    await seed('Ada');
    const { hostname, port } = new URL(redisUrl);
    const proxy = await TcpProxy.start(hostname, Number(port || 6379));
    proxies.push(proxy);
    const through = new Redis({ host: '127.0.0.1', port: proxy.port });
    through.on('error', () => {});
    clients.push(through);
    // Redis stalls once the query has run: between the read of the versions and the SET.
    let stallAfterSelect = false;
    const logged = connect<DB>(testDatabase.url, {
      log: (event) => {
        if (stallAfterSelect && /^\s*select/i.test(event.query.sql)) proxy.setMode('stall');
      },
    });
    others.push(logged);
    const errors: QueryCacheError[] = [];
    const cache = cacheOf({ redis: through, redisTimeoutMs: 30_000, onError: (error) => errors.push(error) }, logged);
    stallAfterSelect = true;
    const rows = await logged.withDeadline({ timeoutMs: 2_000 }, () =>
      cache.execute(logged.db.selectFrom('sluice_model_users').select(['name']).orderBy('name')),
    );
    expect(names(rows)).toEqual(['Ada']);
    expect(errors.map((error) => [error.code, error.operation])).toEqual([['QUERY_CACHE_REDIS_TIMEOUT', 'store']]);
    // The SET was given at most half of what was left of the 2 s deadline, not redisTimeoutMs.
    const givenMs = Number(/within ([\d.]+) ms/.exec(errors[0]!.message)?.[1]);
    expect(givenMs).toBeGreaterThan(0);
    expect(givenMs).toBeLessThanOrEqual(1_000);
  });

  test("a test's pinned transaction: a code transaction rolled back (a savepoint) leaves no stored result of its rows", async () => {
    await seed('Ada');
    const cache = cacheOf();
    const pin = await pinTransaction(database);
    try {
      await expect(
        database.db.transaction().execute(async (trx) => {
          await trx.insertInto('sluice_model_users').values({ name: 'Grace', email: 'g@example.com', age: 40, bio: null }).execute();
          // A Kysely trx builder: the same SQL as usersByName(), read through the cache.
          const inside = await cache.execute(trx.selectFrom('sluice_model_users').select(['name']).orderBy('name'));
          expect(names(inside)).toEqual(['Ada', 'Grace']);
          throw new Error('undo');
        }),
      ).rejects.toThrow('undo');
      expect(names(await database.db.selectFrom('sluice_model_users').select(['name']).orderBy('name').execute())).toEqual(['Ada']);
      expect(names(await cache.execute(usersByName()))).toEqual(['Ada']);
    } finally {
      await pin.end();
    }
  });

  test('a streamed write (insertInto ... returning ... stream()) invalidates, in and out of a transaction', async () => {
    await seed('Ada');
    const cache = cacheOf();
    expect(names(await cache.execute(usersByName()))).toEqual(['Ada']);
    const streamed = database.db
      .insertInto('sluice_model_users')
      .values({ name: 'Grace', email: 'g@example.com', age: 40, bio: null })
      .returning(['name'])
      .stream();
    for await (const row of streamed) expect(row.name).toBe('Grace');
    expect(names(await cache.execute(usersByName()))).toEqual(['Ada', 'Grace']);
    await database.transaction(async () => {
      const inTransaction = currentKysely(database.db)
        .insertInto('sluice_model_users')
        .values({ name: 'Linus', email: 'l@example.com', age: 50, bio: null })
        .returning(['name'])
        .stream();
      for await (const row of inTransaction) expect(row.name).toBe('Linus');
    });
    expect(names(await cache.execute(usersByName()))).toEqual(['Ada', 'Grace', 'Linus']);
  });

  test('users.selectFrom() through the cache: its rows are stored and instances made at every read, one entry with users.query().cached()', async () => {
    await seed('Ada', 'Grace');
    const cache = cacheOf();
    const adults = () => users.selectFrom().where('age', '>=', 30).orderBy('name');
    const first = await selectsOf(() => cache.execute(adults()));
    const second = await selectsOf(() => cache.execute(adults()));
    expect(first.selects).toBe(1);
    expect(second.selects).toBe(0);
    expect(cache.stats()).toMatchObject({ hits: 1, misses: 1, notStored: 0 });
    for (const result of [first.result, second.result]) {
      expect(result.map((user) => user.displayName)).toEqual(['Ada <ada@example.com>', 'Grace <grace@example.com>']);
      for (const user of result) expect(user).toBeInstanceOf(User);
    }
    // A hit's instances have their snapshot: update() writes only what changed since.
    const [ada] = second.result;
    await database.db.updateTable('sluice_model_users').set({ email: 'changed@example.com' }).where('id', '=', ada!.id).execute();
    ada!.name = 'Augusta';
    expect(await users.update(ada!)).toBe(1);
    const row = await database.db.selectFrom('sluice_model_users').selectAll().where('id', '=', ada!.id).executeTakeFirstOrThrow();
    expect(row).toMatchObject({ name: 'Augusta', email: 'changed@example.com' });
    // users.query().cached() compiles to the same SQL: it stores rows, selectFrom() reads them as instances.
    const viaQuery = await selectsOf(() => users.query((qb) => qb.where('age', '>=', 30).orderBy('name')).cached(cache).execute());
    expect(viaQuery.selects).toBe(1);
    const viaSelectFrom = await selectsOf(() => cache.execute(adults()));
    expect(viaSelectFrom.selects).toBe(0);
    expect(viaSelectFrom.result[0]).toBeInstanceOf(User);
    expect(viaSelectFrom.result.map((user) => user.displayName)).toEqual(['Augusta <changed@example.com>', 'Grace <grace@example.com>']);
    // executeTakeFirst and find-like reads too.
    const grace = await cache.executeTakeFirst(users.selectFrom().where('name', '=', 'Grace'));
    expect(grace).toBeInstanceOf(User);
    expect(await cache.executeTakeFirst(users.selectFrom().where('name', '=', 'Grace'))).toBeInstanceOf(User);
  });

  test('a builder with a result plugin (CamelCasePlugin): rows are stored as the builder returns them, after the plugin; a plain builder of the same SQL shares them', async () => {
    await seed('Ada');
    const author = await database.db.selectFrom('sluice_model_users').select('id').executeTakeFirstOrThrow();
    await database.db.insertInto('sluice_model_posts').values({ user_id: author.id, title: 'Notes' }).execute();
    interface CamelDB {
      sluiceModelPosts: { id: number; userId: number; title: string; views: number };
    }
    const camel = (database.db as unknown as Kysely<CamelDB>).withPlugin(new CamelCasePlugin());
    const cache = cacheOf();
    const query = () => camel.selectFrom('sluiceModelPosts').selectAll();
    const first = await selectsOf(() => cache.execute(query()));
    const second = await selectsOf(() => cache.execute(query()));
    expect(second.selects).toBe(0);
    for (const result of [first.result, second.result]) expect(result).toEqual([{ id: expect.any(Number), userId: author.id, title: 'Notes', views: 0 }]);
    // The limit the README states: the key is the SQL, not the plugins.
    const plain = await selectsOf(() => cache.execute(database.db.selectFrom('sluice_model_posts').selectAll()));
    expect(plain.selects).toBe(0);
    expect(Object.keys(plain.result[0]!)).toContain('userId');
  });

  test('two roles on one database (row-level security) do not share entries; a write through one invalidates the other', async () => {
    interface NotesDB {
      qc_notes: { owner: Generated<string>; body: string };
    }
    const admin = database as unknown as Database<NotesDB>;
    const role = `qc_tenant_${randomBytes(4).toString('hex')}`;
    await sql`CREATE TABLE qc_notes (owner text NOT NULL DEFAULT current_user, body text NOT NULL)`.execute(admin.db);
    await sql`ALTER TABLE qc_notes ENABLE ROW LEVEL SECURITY`.execute(admin.db);
    await sql`CREATE POLICY qc_own ON qc_notes USING (owner = current_user)`.execute(admin.db);
    await sql`CREATE ROLE ${sql.id(role)} LOGIN`.execute(admin.db);
    let tenant: Database<NotesDB> | undefined;
    try {
      await sql`GRANT SELECT, INSERT ON qc_notes TO ${sql.id(role)}`.execute(admin.db);
      await admin.db.insertInto('qc_notes').values([{ owner: role, body: 'mine' }, { owner: 'someone_else', body: 'theirs' }]).execute();
      const url = new URL(testDatabase.url);
      url.username = role;
      url.password = '';
      tenant = connect<NotesDB>(url.href);
      const adminCache = cacheOf() as unknown as QueryCache<NotesDB>;
      const tenantCache = createQueryCache(tenant, { redis, prefix });
      caches.push(tenantCache as unknown as QueryCache<DB>);
      const notes = (db: Kysely<NotesDB>) => db.selectFrom('qc_notes').select('body').orderBy('body');
      const bodies = (rows: ReadonlyArray<{ body: string }>): string[] => rows.map((row) => row.body);
      // The superuser (who bypasses row-level security) first: its entry must not answer the tenant.
      expect(bodies(await adminCache.execute(notes(admin.db)))).toEqual(['mine', 'theirs']);
      expect(bodies(await tenantCache.execute(notes(tenant.db)))).toEqual(['mine']);
      expect(bodies(await tenantCache.execute(notes(tenant.db)))).toEqual(['mine']);
      expect(bodies(await adminCache.execute(notes(admin.db)))).toEqual(['mine', 'theirs']);
      expect(tenantCache.stats()).toMatchObject({ hits: 1, misses: 1 });
      expect(adminCache.stats()).toMatchObject({ hits: 1, misses: 1 });
      // Neither the user nor the URL in Redis keys.
      for (const key of await redis.keys(`${prefix}:*`)) expect(key).not.toMatch(new RegExp(`${role}|127\\.0\\.0\\.1|postgres`));
      // Table versions stay shared: the tenant's write invalidates the superuser's entry too.
      await tenant.db.insertInto('qc_notes').values({ body: 'new' }).execute();
      expect(bodies(await adminCache.execute(notes(admin.db)))).toEqual(['mine', 'new', 'theirs']);
      expect(bodies(await tenantCache.execute(notes(tenant.db)))).toEqual(['mine', 'new']);
      expect(adminCache.stats().misses).toBe(2);
    } finally {
      await tenant?.close();
      await sql`DROP TABLE qc_notes`.execute(admin.db);
      await sql`DROP OWNED BY ${sql.id(role)}`.execute(admin.db);
      await sql`DROP ROLE ${sql.id(role)}`.execute(admin.db);
    }
  });

  test("two URLs that differ only in their query string (options=-c search_path=...) do not share entries; writes invalidate both", async () => {
    interface ItemsDB {
      qc_items: { name: string };
    }
    const admin = database as unknown as Database<ItemsDB>;
    for (const schema of ['qc_a', 'qc_b']) {
      await sql`CREATE SCHEMA ${sql.id(schema)}`.execute(admin.db);
      await sql`CREATE TABLE ${sql.id(schema, 'qc_items')} (name text NOT NULL)`.execute(admin.db);
      await sql`INSERT INTO ${sql.id(schema, 'qc_items')} VALUES (${`in ${schema}`})`.execute(admin.db);
    }
    const connected: Array<Database<ItemsDB>> = [];
    try {
      const open = (schema: string): { database: Database<ItemsDB>; cache: QueryCache<ItemsDB> } => {
        const url = new URL(testDatabase.url);
        url.searchParams.set('options', `-c search_path=${schema}`);
        const on = connect<ItemsDB>(url.href);
        connected.push(on);
        const cache = createQueryCache(on, { redis, prefix });
        caches.push(cache as unknown as QueryCache<DB>);
        return { database: on, cache };
      };
      const a = open('qc_a');
      const b = open('qc_b');
      const items = async (side: { database: Database<ItemsDB>; cache: QueryCache<ItemsDB> }): Promise<string[]> =>
        (await side.cache.execute(side.database.db.selectFrom('qc_items').select('name').orderBy('name'))).map((row) => row.name);
      expect(await items(a)).toEqual(['in qc_a']);
      expect(await items(b)).toEqual(['in qc_b']);
      expect(await items(b)).toEqual(['in qc_b']);
      expect(b.cache.stats()).toMatchObject({ hits: 1, misses: 1 });
      // A write through a moves the shared version of qc_items: b's entry is dropped too (a miss, never stale).
      await a.database.db.insertInto('qc_items').values({ name: 'added to qc_a' }).execute();
      expect(await items(b)).toEqual(['in qc_b']);
      expect(b.cache.stats().misses).toBe(2);
      expect(await items(a)).toEqual(['added to qc_a', 'in qc_a']);
    } finally {
      for (const on of connected) await on.close();
      await sql`DROP SCHEMA qc_a, qc_b CASCADE`.execute(admin.db);
    }
  });

  test('options are checked', () => {
    expect(() => createQueryCache(database, { redis, prefix: 'has space' })).toThrow(InvalidOptionError);
    expect(() => createQueryCache(database, { redis, ttlMs: 0 })).toThrow(InvalidOptionError);
    expect(() => createQueryCache(database, { redis, redisTimeoutMs: -1 })).toThrow(InvalidOptionError);
    expect(() => createQueryCache({ db: database.db } as unknown as Database<DB>, { redis })).toThrow(InvalidOptionError);
    const cache = cacheOf();
    const otherDatabase = connect<DB>(testDatabase.url);
    others.push(otherDatabase);
    const otherUsers = models(otherDatabase as unknown as Database<ModelDB>, { users: User }).users;
    expect(() => otherUsers.query().cached(cache)).toThrow(/own database/);
  });
});
