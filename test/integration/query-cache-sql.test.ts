/**
 * The query cache's invalidation on SQLite and MariaDB/MySQL (PostgreSQL has its own file):
 * writes through database.db, a repository and a transaction reach Redis; bigints from
 * SQLite round-trip exactly.
 */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import type { TestDatabase } from 'sluice/testing';
import { openTestDatabase, skipReason, testServerUrl } from 'sluice/testing/vitest';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { createQueryCache, type QueryCache } from '../../src/orm/cache/index.js';
import type { Database } from '../../src/orm/connect.js';
import { models, type Repository } from '../../src/orm/model/index.js';
import { clearTables, type DB, User } from '../support/models-schema.js';

const redisUrl = testServerUrl('redis') ?? '';

for (const dialect of ['sqlite', 'mysql'] as const) {
  describe.skipIf(redisUrl === '' || skipReason(dialect) !== undefined)(`query cache invalidation over ${dialect} and Redis (real servers)`, () => {
    let testDatabase: TestDatabase<DB>;
    let database: Database<DB>;
    let users: Repository<typeof User>;
    let redis: Redis;
    let cache: QueryCache<DB>;
    let prefix: string;
    let selects = 0;
    const names = async (): Promise<string[]> =>
      (await cache.execute(database.db.selectFrom('sluice_model_users').select(['name']).orderBy('name'))).map((row) => row.name);
    const version = (): Promise<string | null> => redis.get(`${prefix}:v:sluice_model_users`);

    beforeAll(async () => {
      testDatabase = await openTestDatabase<DB>(dialect, {
        log: (event) => {
          if (/^\s*select\b/i.test(event.query.sql)) selects++;
        },
        ...(dialect === 'sqlite' ? { sqlite: { bigints: true } } : {}),
      });
      database = testDatabase.database;
      ({ users } = models(database, { users: User }));
      redis = new Redis(redisUrl);
    });
    afterAll(async () => {
      redis?.disconnect();
      await testDatabase?.drop();
    });
    afterEach(async () => {
      cache.close();
      const keys = await redis.keys(`${prefix}:*`);
      if (keys.length > 0) await redis.del(...keys);
    });

    test('writes through database.db, a repository and a committed transaction invalidate; a hit sends no query', async () => {
      await clearTables(database);
      prefix = `sluice-test:qc:${randomBytes(6).toString('hex')}`;
      cache = createQueryCache(database, { redis, prefix });
      const ada = await users.insert({ name: 'Ada', email: 'a@example.com', age: 36, bio: null });
      expect(await names()).toEqual(['Ada']);
      const from = selects;
      expect(await names()).toEqual(['Ada']);
      expect(selects).toBe(from);
      await database.db.insertInto('sluice_model_users').values({ name: 'Grace', email: 'g@example.com', age: 40, bio: null }).execute();
      expect(await names()).toEqual(['Ada', 'Grace']);
      ada.name = 'Augusta';
      await users.update(ada);
      expect(await names()).toEqual(['Augusta', 'Grace']);
      const before = await version();
      await database.transaction(async (trx) => {
        await trx.deleteFrom('sluice_model_users').where('name', '=', 'Grace').execute();
      });
      expect(await version()).not.toBe(before);
      expect(await names()).toEqual(['Augusta']);
      // A rollback: nothing changed; on MySQL it still invalidates (a DDL statement in the
      // transaction would have committed it implicitly, which sluice cannot see).
      const beforeRollback = await version();
      await expect(
        database.transaction(async (trx) => {
          await trx.deleteFrom('sluice_model_users').execute();
          throw new Error('undo');
        }),
      ).rejects.toThrow('undo');
      if (dialect === 'mysql') expect(await version()).not.toBe(beforeRollback);
      else expect(await version()).toBe(beforeRollback);
      expect(await names()).toEqual(['Augusta']);
    });

    // Only SQLite is opened with bigints: true here: the test exists for it alone.
    if (dialect === 'sqlite') {
      test('bigints (SQLite with bigints: true) round-trip exactly', async () => {
        await clearTables(database);
        prefix = `sluice-test:qc:${randomBytes(6).toString('hex')}`;
        cache = createQueryCache(database, { redis, prefix });
        await users.insert({ name: 'Big', email: 'b@example.com', age: 1, bio: null });
        const query = () => database.db.selectFrom('sluice_model_users').select(['id', 'age']);
        const fresh = await cache.execute(query());
        const cached = await cache.execute(query());
        expect(cache.stats().hits).toBe(1);
        expect(typeof cached[0]!.age).toBe('bigint');
        expect(cached).toEqual(fresh);
      });
    }
  });
}
