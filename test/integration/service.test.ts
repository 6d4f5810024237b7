/**
 * The example service (examples/service) over real HTTP, on SQLite and on the PostgreSQL
 * and MySQL/MariaDB servers found: its API, its errors (400/404/409), load shedding (503),
 * deadlines (504, the statement stopped on the server), a client that disconnects (its
 * statement stopped on the server), and that a failed request leaves nothing written.
 */
import { sql } from 'kysely';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openTestDatabase, skipReason } from 'sluice/testing/vitest';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import {
  ConnectionLostError,
  type Database,
  DeadlockError,
  ModelNotFoundError,
  PoolQueueFullError,
  PoolTimeoutError,
  QueryTimeoutError,
} from '../../src/index.js';
import { ClientGoneError } from '../../examples/service/src/plugins/request-deadline.js';
import type { DB } from '../../examples/service/src/schema.js';
import { clearServiceTables, type RunningService, type ServiceDialect, startService } from '../support/service-harness.js';

const sqliteDir = mkdtempSync(join(tmpdir(), 'sluice-service-'));
afterAll(() => rmSync(sqliteDir, { recursive: true, force: true }));

const dialects: readonly ServiceDialect[] = ['sqlite', 'postgres', 'mysql'];

/** Polls `check` until it holds; fails with `what` after `guardMs` (a guard against a hang, not a timing assertion). */
async function eventually(what: string, check: () => Promise<boolean> | boolean, guardMs = 15_000): Promise<void> {
  const until = Date.now() + guardMs;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`still not true after ${guardMs} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** The statements each test watches for, by what they write (as Kysely writes them). */
const WATCHED = {
  comment: { postgres: ['insert into "comments"%', 'update "posts"%'], mysql: ['insert into `comments`%', 'update `posts`%'] },
  tags: { postgres: ['insert into "tags"%'], mysql: ['insert ignore into `tags`%'] },
} as const;

/**
 * How many of the `watched` statements are running on the server now, read from the server
 * itself (PostgreSQL's pg_stat_activity, MySQL's processlist): proof that a request's
 * statement is, or no longer is, running there. SQLite has no server: its statements run in
 * the pool's sessions, so it counts the requesting service's sessions in use.
 */
async function statementsRunning(observer: Database<DB>, requester: Database<DB>, dialect: ServiceDialect, watched: keyof typeof WATCHED): Promise<number> {
  if (dialect === 'sqlite') return requester.stats().inUse;
  const patterns = WATCHED[watched][dialect];
  if (dialect === 'postgres') {
    const matches = sql.join(patterns.map((pattern) => sql`query LIKE ${pattern}`), sql` OR `);
    const { rows } = await sql<{ n: number }>`
      SELECT count(*)::int AS n FROM pg_stat_activity
      WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'active' AND (${matches})`.execute(observer.db);
    return rows[0]!.n;
  }
  const matches = sql.join(patterns.map((pattern) => sql`info LIKE ${pattern}`), sql` OR `);
  const { rows } = await sql<{ n: number }>`
    SELECT count(*) AS n FROM information_schema.processlist
    WHERE db = DATABASE() AND id <> CONNECTION_ID() AND command <> 'Sleep' AND (${matches})`.execute(observer.db);
  return Number(rows[0]!.n);
}

/**
 * Holds the row lock of post `postId` (SQLite: the write lock) in a transaction of its own
 * until `release()`: a request that writes the post waits behind it, like one that meets a
 * long transaction of another client.
 */
function holdPostLock(database: Database<DB>, postId: number): { readonly locked: Promise<void>; release(): Promise<void> } {
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  let locked!: () => void;
  const lockTaken = new Promise<void>((resolve) => (locked = resolve));
  const done = database.transaction(async (trx) => {
    await trx.updateTable('posts').set((eb) => ({ comment_count: eb('comment_count', '+', 0) })).where('id', '=', postId).execute();
    locked();
    await released;
  });
  return {
    locked: Promise.race([lockTaken, done.then(() => undefined)]),
    async release() {
      release();
      await done;
    },
  };
}

for (const dialect of dialects) {
  describe.skipIf(skipReason(dialect) !== undefined)(`example service over ${dialect} (real HTTP, real database)`, () => {
    let url: string;
    let service: RunningService;
    let drop: () => Promise<void>;

    beforeAll(async () => {
      // A database of its own from sluice/testing, already migrated (the run's template
      // holds the service's schema); the service's boot migrations find nothing to do.
      // No per-test transaction: requests run on several connections and hold locks
      // against each other; tables are emptied between tests instead.
      ({ url, drop } = await openTestDatabase<DB>(dialect));
      service = await startService(url);
    });
    afterAll(async () => {
      await service?.close();
      await drop?.();
    });
    beforeEach(() => clearServiceTables(service.database));

    async function author(name = 'Ada', email = `${name.toLowerCase()}@example.com`): Promise<{ id: number }> {
      const answer = await service.call('POST', '/authors', { name, email });
      expect(answer.status).toBe(201);
      return answer.body;
    }
    async function post(authorId: number, title: string, tags: string[] = []): Promise<{ id: number; slug: string; createdAt: string }> {
      const answer = await service.call('POST', '/posts', { authorId, title, body: `About ${title}.\nMore.`, tags });
      expect(answer.status, JSON.stringify(answer.body)).toBe(201);
      return answer.body;
    }
    const count = async (table: keyof DB): Promise<number> => {
      const row = await service.database.db.selectFrom(table).select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
      return Number(row.n);
    };

    test('creates, reads with relations, pages, updates and deletes', async () => {
      const ada = await author('Ada', 'Ada@Example.com');
      const created = await post(ada.id, 'Hello, World!', ['Intro', 'news', 'intro']);
      expect(created).toMatchObject({ authorId: ada.id, title: 'Hello, World!', slug: 'hello-world', excerpt: 'About Hello, World!.', commentCount: 0, tags: ['intro', 'news'] });
      expect(new Date(created.createdAt).getTime()).not.toBeNaN();

      const comment = await service.call('POST', `/posts/${created.id}/comments`, { commenter: 'Grace', body: 'Nice.' });
      expect(comment.status).toBe(201);
      expect(comment.body).toMatchObject({ postId: created.id, commenter: 'Grace', body: 'Nice.' });

      const read = await service.call('GET', `/posts/${created.id}`);
      expect(read.status).toBe(200);
      expect(read.body).toMatchObject({
        id: created.id,
        body: 'About Hello, World!.\nMore.',
        commentCount: 1,
        author: { id: ada.id, name: 'Ada', email: 'ada@example.com' },
        tags: ['intro', 'news'],
        comments: [{ commenter: 'Grace', body: 'Nice.' }],
      });

      const accented = await post(ada.id, 'Crème brûlée, über alles');
      expect(accented.slug).toBe('creme-brulee-uber-alles');

      const withPosts = await service.call('GET', `/authors/${ada.id}`);
      expect(withPosts.body.posts.map((p: { slug: string }) => p.slug)).toEqual(['hello-world', 'creme-brulee-uber-alles']);
      expect(withPosts.body.posts[0]).not.toHaveProperty('body');

      const renamed = await service.call('PATCH', `/posts/${created.id}`, { title: 'Renamed', tags: ['db'] });
      expect(renamed.status).toBe(200);
      expect(renamed.body).toMatchObject({ title: 'Renamed', slug: 'renamed', tags: ['db'] });
      expect((await service.call('GET', `/posts?tag=DB%20`)).body.items.map((p: { id: number }) => p.id)).toEqual([created.id]);
      expect((await service.call('GET', `/posts?tag=news`)).body.items).toEqual([]);
      const patchedAuthor = await service.call('PATCH', `/authors/${ada.id}`, { name: 'Ada Lovelace' });
      expect(patchedAuthor.body).toMatchObject({ name: 'Ada Lovelace', email: 'ada@example.com' });

      expect((await service.call('DELETE', `/posts/${created.id}`)).status).toBe(204);
      expect((await service.call('GET', `/posts/${created.id}`)).status).toBe(404);
      expect(await count('comments')).toBe(0); // ON DELETE CASCADE
      expect((await service.call('DELETE', `/authors/${ada.id}`)).status).toBe(204);
      expect((await service.call('DELETE', `/authors/${ada.id}`)).status).toBe(404);
    });

    test('lists page by page, in id order, with each post\'s author and tags', async () => {
      const ada = await author('Ada');
      const grace = await author('Grace');
      const written = [];
      for (let i = 1; i <= 5; i++) written.push(await post(i % 2 === 0 ? grace.id : ada.id, `Post ${i}`, [`t${i % 2}`]));
      const first = await service.call('GET', '/posts?limit=2');
      expect(first.body.items.map((p: { id: number }) => p.id)).toEqual(written.slice(0, 2).map((p) => p.id));
      expect(first.body.items[1]).toMatchObject({ author: { name: 'Grace' }, tags: ['t0'] });
      const second = await service.call('GET', `/posts?limit=2&after=${first.body.next}`);
      expect(second.body.items.map((p: { id: number }) => p.id)).toEqual(written.slice(2, 4).map((p) => p.id));
      const last = await service.call('GET', `/posts?limit=2&after=${second.body.next}`);
      expect(last.body).toEqual({ items: [expect.objectContaining({ id: written[4]!.id })], next: null });
      const byGrace = await service.call('GET', `/posts?authorId=${grace.id}`);
      expect(byGrace.body.items.map((p: { id: number }) => p.id)).toEqual([written[1]!.id, written[3]!.id]);
      const authors = await service.call('GET', '/authors?limit=1');
      expect(authors.body).toMatchObject({ items: [{ name: 'Ada' }], next: ada.id });
    });

    test('bad input answers 400 with a message naming the field, and writes nothing', async () => {
      const ada = await author();
      const cases: Array<[string, string, unknown, RegExp]> = [
        ['POST', '/authors', { name: 'X', email: 'not-an-email' }, /body\/email must match format "email"/],
        ['POST', '/authors', { name: 'X', email: 'x@example.com', admin: true }, /must NOT have additional properties/],
        ['POST', '/authors', { email: 'x@example.com' }, /must have required property 'name'/],
        ['POST', '/authors', '{"name": "X",', /JSON/i],
        ['POST', '/posts', { authorId: ada.id, title: '   ', body: 'b' }, /body\/title/],
        ['POST', '/posts', { authorId: ada.id, title: '!!!', body: 'b' }, /body\/title must contain a letter or a digit/],
        ['POST', '/posts', { authorId: ada.id, title: 'T', body: 'b', tags: ['ok', 'no/slash'] }, /body\/tags\/1/],
        ['POST', '/posts', { authorId: 999_999, title: 'T', body: 'b' }, /no author 999999/],
        ['GET', '/posts/abc', undefined, /params\/id must be integer/],
        ['GET', '/posts?limit=1000', undefined, /querystring\/limit must be <= 100/],
        // Beyond a 32-bit id: refused by the schema, not by the database (a 500).
        ['GET', '/posts/99999999999', undefined, /params\/id must be <= 2147483647/],
        ['GET', '/posts?after=99999999999', undefined, /querystring\/after must be <= 2147483647/],
        ['POST', '/posts', { authorId: 99_999_999_999, title: 'T', body: 'b' }, /body\/authorId must be <= 2147483647/],
        ['POST', '/posts/99999999999/comments', { commenter: 'X', body: 'x' }, /params\/id must be <= 2147483647/],
        ['PATCH', `/authors/${ada.id}`, {}, /must NOT have fewer than 1 properties/],
      ];
      for (const [method, path, body, message] of cases) {
        const answer = await service.call(method, path, body);
        expect(answer.status, `${method} ${path} ${JSON.stringify(body)}`).toBe(400);
        expect(answer.body).toMatchObject({ statusCode: 400, error: 'Bad Request' });
        expect(answer.body.message).toMatch(message);
      }
      expect(await count('authors')).toBe(1);
      expect(await count('posts')).toBe(0);
    });

    test('a missing row answers 404, on every route that names one', async () => {
      for (const [method, path, body] of [
        ['GET', '/authors/424242', undefined],
        ['PATCH', '/authors/424242', { name: 'X' }],
        ['DELETE', '/authors/424242', undefined],
        ['GET', '/posts/424242', undefined],
        ['PATCH', '/posts/424242', { body: 'x' }],
        ['DELETE', '/posts/424242', undefined],
        ['GET', '/posts/424242/comments', undefined],
        ['POST', '/posts/424242/comments', { commenter: 'X', body: 'x' }],
        ['GET', '/no-such-route', undefined],
      ] as const) {
        const answer = await service.call(method, path, body);
        expect(answer.status, `${method} ${path}`).toBe(404);
        expect(answer.body.error).toBe('Not Found');
      }
      expect(await count('comments')).toBe(0);
    });

    test('a unique conflict answers 409, and the transaction it ends leaves nothing behind', async () => {
      const ada = await author('Ada');
      const conflictingAuthor = await service.call('POST', '/authors', { name: 'Other Ada', email: 'ADA@example.com' });
      expect(conflictingAuthor.status).toBe(409);
      expect(conflictingAuthor.body.message).toBe('An author with the email ada@example.com already exists.');
      const grace = await author('Grace');
      expect((await service.call('PATCH', `/authors/${grace.id}`, { email: 'ada@example.com' })).status).toBe(409);

      await post(ada.id, 'Hello', ['old']);
      // The tags are written first, then the post, whose slug is taken: the whole transaction
      // is rolled back, new tags included.
      const clash = await service.call('POST', '/posts', { authorId: grace.id, title: 'hello!', body: 'b', tags: ['brand-new', 'old'] });
      expect(clash.status).toBe(409);
      expect(clash.body.message).toBe('A post with the slug "hello" already exists: choose another title.');
      expect(await count('posts')).toBe(1);
      expect((await service.database.db.selectFrom('tags').select('name').execute()).map((t) => t.name)).toEqual(['old']);
      expect(await count('post_tags')).toBe(1);
    });

    test('a tag another request is creating at the same moment is linked, not lost', async () => {
      const ada = await author();
      // Started first: its start migrates, which would wait for the transaction below on SQLite.
      const writer = await startService(url, { sqlite: { busyTimeoutMs: 60_000 } });
      // Another transaction has created the tag "fresh" and not committed yet.
      let commit!: () => void;
      const committed = new Promise<void>((resolve) => (commit = resolve));
      let created!: () => void;
      const tagCreated = new Promise<void>((resolve) => (created = resolve));
      const other = service.database.transaction(async (trx) => {
        await trx.insertInto('tags').values({ name: 'fresh' }).execute();
        created();
        await committed;
      });
      try {
        await Promise.race([tagCreated, other]);
        const answer = writer.call('POST', '/posts', { authorId: ada.id, title: 'Fresh', body: 'b', tags: ['fresh', 'other'] });
        // The request has read (its author) and now waits for the other transaction's tag.
        await eventually('the request waits for the uncommitted tag', async () => (await statementsRunning(service.database, writer.database, dialect, 'tags')) === 1);
        commit();
        await other;
        const written = await answer;
        expect(written.status).toBe(201);
        expect(written.body.tags).toEqual(['fresh', 'other']);
        expect((await service.call('GET', `/posts/${written.body.id}`)).body.tags).toEqual(['fresh', 'other']);
        expect(await count('post_tags')).toBe(2);
      } finally {
        commit();
        await other.catch(() => undefined);
        await writer.close();
      }
    });

    test('a full queue sheds the request at once: 503 with Retry-After; it is counted in /metrics', async () => {
      const ada = await author();
      const shedding = await startService(url, { pool: { max: 2, maxWaiting: 1 }, retryAfterSeconds: 7 });
      try {
        const held = [await shedding.database.pool.acquire(), await shedding.database.pool.acquire()];
        const queued = shedding.call('GET', `/authors/${ada.id}`);
        await eventually('the first request waits for a connection', () => shedding.database.stats().waiting === 1);
        const shed = await shedding.call('GET', `/authors/${ada.id}`);
        expect(shed.status).toBe(503);
        expect(shed.headers.get('retry-after')).toBe('7');
        expect(shed.body).toEqual({ statusCode: 503, error: 'Service Unavailable', message: expect.stringMatching(/at capacity/) });
        // Monitoring still answers while the service sheds (and /healthz says it is not ready).
        expect((await shedding.call('GET', '/metrics')).status).toBe(200);
        expect(await shedding.call('GET', '/healthz')).toMatchObject({ status: 503, body: { status: 'unavailable' } });
        for (const lease of held) lease.release();
        expect((await queued).status).toBe(200);
        expect((await shedding.call('GET', `/authors/${ada.id}`)).status).toBe(200);
        const metrics = (await shedding.call('GET', '/metrics')).body as string;
        // The request was refused at the door, before any query; the pool itself refused one
        // acquire: /healthz's ping, which is let through the door.
        expect(metrics).toMatch(/^http_requests_shed_total 1$/m);
        expect(metrics).toMatch(/^sluice_pool_shed_total 1$/m);
      } finally {
        await shedding.close();
      }
    });

    test('past its deadline a request answers 504, its statement is stopped on the server, and nothing is written', async () => {
      const ada = await author();
      const target = await post(ada.id, 'Locked');
      const slow = await startService(url, { requestTimeoutMs: 500 });
      const lock = holdPostLock(service.database, target.id);
      try {
        await lock.locked;
        // The comment goes in, then the post's count waits behind the lock until the deadline.
        const answer = await slow.call('POST', `/posts/${target.id}/comments`, { commenter: 'Grace', body: 'late' });
        expect(answer.status).toBe(504);
        expect(answer.body.message).toMatch(/deadline/);
        await eventually('the timed-out statement has left the server', async () => (await statementsRunning(service.database, slow.database, dialect, 'comment')) === 0);
        const metrics = (await slow.call('GET', '/metrics')).body as string;
        expect(metrics).toMatch(/^sluice_query_timeouts_total [1-9]/m);
      } finally {
        await lock.release();
        await slow.close();
      }
      expect(await count('comments')).toBe(0);
      expect((await service.call('GET', `/posts/${target.id}`)).body.commentCount).toBe(0);
    });

    test('a client that disconnects has its statement stopped on the server, before any deadline', async () => {
      const ada = await author();
      const target = await post(ada.id, 'Locked');
      // A deadline and a SQLite busy timeout far beyond the test: only the disconnect can stop the request.
      const patient = await startService(url, { requestTimeoutMs: 120_000, sqlite: { busyTimeoutMs: 120_000 } });
      const lock = holdPostLock(service.database, target.id);
      const client = new AbortController();
      try {
        await lock.locked;
        const request = fetch(`${patient.baseUrl}/posts/${target.id}/comments`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ commenter: 'Grace', body: 'gone' }),
          signal: client.signal,
        });
        await eventually('the request waits behind the lock', async () => (await statementsRunning(service.database, patient.database, dialect, 'comment')) === 1);
        client.abort();
        await expect(request).rejects.toThrow();
        // The lock is still held: only the client going away can have stopped the statement.
        await eventually('the abandoned statement has left the server', async () => (await statementsRunning(service.database, patient.database, dialect, 'comment')) === 0);
        await eventually('the request gave its connection back', () => patient.database.stats().inUse === 0);
      } finally {
        client.abort();
        await lock.release();
        await patient.close();
      }
      expect(await count('comments')).toBe(0);
    });

    test('GET /healthz pings the database; /metrics shows the pool and query latency', async () => {
      expect(await service.call('GET', '/healthz')).toMatchObject({ status: 200, body: { status: 'ok', database: dialect } });
      const metrics = await service.call('GET', '/metrics');
      expect(metrics.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
      for (const name of ['sluice_pool_size', 'sluice_pool_in_use', 'sluice_pool_idle', 'sluice_pool_waiting', 'sluice_pool_max', 'sluice_pool_timeouts_total', 'sluice_pool_shed_total']) {
        expect(metrics.body, name).toMatch(new RegExp(`^${name} \\d+$`, 'm'));
      }
      expect(metrics.body).toMatch(/^sluice_pool_max 4$/m);
      expect(metrics.body).toMatch(/^sluice_query_duration_seconds_count\{outcome="ok"\} [1-9]\d*$/m);
      expect(metrics.body).toMatch(/^nodejs_eventloop_lag_seconds /m);
    });
  });
}

describe('example service with its database unreachable', () => {
  test('/healthz and the routes answer 503 with Retry-After, and no secret is shown', async () => {
    // Port 1 on loopback: nothing listens, connections are refused at once.
    const down = await startService('postgres://postgres:s3cret-pw@127.0.0.1:1/nowhere', { migrate: false, requestTimeoutMs: 1_500 });
    try {
      const health = await down.call('GET', '/healthz');
      expect(health.status).toBe(503);
      expect(health.body).toMatchObject({ status: 'unavailable', database: 'postgres' });
      const answer = await down.call('GET', '/posts');
      expect(answer.status).toBe(503);
      expect(answer.headers.get('retry-after')).toBe('1');
      expect(answer.body.message).toBe('The database is unavailable. Retry later.');
      expect(JSON.stringify([health.body, answer.body])).not.toMatch(/s3cret/);
      expect(down.database.location).toBe('PostgreSQL 127.0.0.1:1/nowhere');
    } finally {
      await down.close();
    }
  });
});

describe('example service: what each failure answers', () => {
  test('every sluice error a query can end with maps to its status, with Retry-After where a retry may work and no internals', async () => {
    const failures: Record<string, () => Error> = {
      shed: () => new PoolQueueFullError(10),
      'query-timeout': () => new QueryTimeoutError(500),
      'pool-exhausted': () => new PoolTimeoutError('exhausted', 500, 'pool: timed out'),
      'pool-create-failed': () => new PoolTimeoutError('create-failed', 500, 'pool: timed out', { cause: new Error('ECONNREFUSED') }),
      'connection-lost': () => new ConnectionLostError('lost', { cause: new Error('reset') }),
      deadlock: () => new DeadlockError('deadlock', { sqlState: '40P01', cause: new Error('deadlock detected') }),
      // Routes turn the ModelNotFoundError of a row deleted meanwhile into a 404 themselves; one that
      // reaches the handler is a misuse (an instance never inserted), a bug: 500.
      'model-misuse': () => new ModelNotFoundError('This Post has no id: insert it with insert() first.'),
      bug: () => new Error('internal detail: SELECT secret FROM vault'),
    };
    const service = await startService(`sqlite:${join(sqliteDir, 'failures.db')}`, {
      extend: (app) => {
        // Routes of the test's own that fail the way a query can: the error handling under test is the service's.
        for (const [name, failure] of Object.entries(failures)) app.get(`/fail/${name}`, async () => Promise.reject(failure()));
      },
    });
    try {
      const expected: Record<string, [number, boolean]> = {
        shed: [503, true],
        'query-timeout': [504, false],
        'pool-exhausted': [504, false],
        'pool-create-failed': [503, true],
        'connection-lost': [503, true],
        deadlock: [503, true],
        'model-misuse': [500, false],
        bug: [500, false],
      };
      for (const [name, [status, retry]] of Object.entries(expected)) {
        const answer = await service.call('GET', `/fail/${name}`);
        expect(answer.status, name).toBe(status);
        expect(answer.headers.get('retry-after') !== null, `${name} Retry-After`).toBe(retry);
        expect(answer.body).toMatchObject({ statusCode: status, error: expect.any(String), message: expect.any(String) });
        expect(JSON.stringify(answer.body)).not.toMatch(/secret|ECONNREFUSED|40P01/);
      }
    } finally {
      await service.close();
    }
  });
});

describe('example service: a client gone before its handler starts', () => {
  test("the handler's queries are refused at once, not run for no one", async () => {
    let settled!: (outcome: unknown) => void;
    const outcome = new Promise<unknown>((resolve) => (settled = resolve));
    const service = await startService(`sqlite:${join(sqliteDir, 'gone-early.db')}`, {
      extend: (app, database) => {
        // A hook of the test's own holds the request until its client has gone (as a slow
        // body or a slow hook would), then the handler, wrapped by the service, queries.
        app.get(
          '/test/late',
          { preHandler: (_request, reply, done) => void reply.raw.once('close', () => done()) },
          async () => {
            await sql`SELECT 1`.execute(database.db).then(() => settled('the query ran'), (error: unknown) => settled(error));
            return {};
          },
        );
      },
    });
    try {
      const client = new AbortController();
      const request = fetch(`${service.baseUrl}/test/late`, { signal: client.signal });
      setTimeout(() => client.abort(), 50);
      await expect(request).rejects.toThrow();
      expect(await outcome).toBeInstanceOf(ClientGoneError);
    } finally {
      await service.close();
    }
  });
});
