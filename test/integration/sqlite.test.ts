import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Generated, sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, test, vi } from 'vitest';
import {
  ConnectionError,
  DatabaseError,
  ForeignKeyViolationError,
  InvalidOptionError,
  QueryTimeoutError,
  UniqueViolationError,
} from '../../src/index.js';
import { connect, type Database } from '../../src/orm/connect.js';
import { runNode } from '../support/run-node.js';

interface DB {
  person: { id: Generated<number>; name: string; active: number | boolean; born: string | Date | null };
  pet: { id: Generated<number>; owner_id: number; name: string };
  log: { writer: number; seq: number };
}

/**
 * A query that keeps its worker busy for about a second on the development machine (a
 * recursive CTE counting to ten million): long enough to outlast a 200 ms deadline.
 */
const SLOW = sql<{ n: number }>`WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10000000) SELECT count(*) AS n FROM c`;

describe('connect() over SQLite (better-sqlite3 in worker threads)', () => {
  let dir: string;
  let database: Database<DB>;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'sluice-sqlite-'));
    database = connect<DB>(`sqlite:${join(dir, 'main.db')}`, { pool: { max: 4 } });
    await sql`CREATE TABLE person (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, active INTEGER, born TEXT)`.execute(database.db);
    await sql`CREATE TABLE pet (id INTEGER PRIMARY KEY, owner_id INTEGER NOT NULL REFERENCES person (id), name TEXT NOT NULL)`.execute(
      database.db,
    );
    await sql`CREATE TABLE log (writer INTEGER NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (writer, seq))`.execute(database.db);
  });
  afterAll(async () => {
    await database?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('Kysely CRUD and raw SQL; booleans and dates are stored as 1/0 and ISO text', async () => {
    const inserted = await database.db
      .insertInto('person')
      .values({ name: 'Ada', active: true, born: new Date('1815-12-10T00:00:00Z') })
      .executeTakeFirstOrThrow();
    expect(inserted.insertId).toBe(1n);
    const [grace] = await database.db.insertInto('person').values({ name: 'Grace', active: false, born: null }).returning('id').execute();
    expect(grace).toEqual({ id: 2 });

    expect(await database.db.selectFrom('person').selectAll().orderBy('id').execute()).toEqual([
      { id: 1, name: 'Ada', active: 1, born: '1815-12-10T00:00:00.000Z' },
      { id: 2, name: 'Grace', active: 0, born: null },
    ]);
    const updated = await database.db.updateTable('person').set({ active: true }).where('id', '=', 2).executeTakeFirstOrThrow();
    expect(updated.numUpdatedRows).toBe(1n);
    const raw = await sql<{ name: string }>`SELECT name FROM person WHERE active = ${true} AND name <> ${'x'} ORDER BY id`.execute(database.db);
    expect(raw.rows).toEqual([{ name: 'Ada' }, { name: 'Grace' }]);
    const deleted = await database.db.deleteFrom('person').where('id', '=', 2).executeTakeFirstOrThrow();
    expect(deleted.numDeletedRows).toBe(1n);
    // The journal is WAL and foreign keys are enforced on every worker.
    expect((await sql<{ journal_mode: string }>`PRAGMA journal_mode`.execute(database.db)).rows).toEqual([{ journal_mode: 'wal' }]);
    expect(database.stats()).toMatchObject({ inUse: 0 });
  });

  test('unique and foreign-key violations get their typed errors, with the SQLite code kept', async () => {
    const duplicate = await database.db
      .insertInto('person')
      .values({ name: 'Ada', active: 1, born: null })
      .execute()
      .catch((e: unknown) => e);
    expect(duplicate).toBeInstanceOf(UniqueViolationError);
    expect(duplicate).toMatchObject({ code: 'UNIQUE_VIOLATION', driverCode: 'SQLITE_CONSTRAINT_UNIQUE' });
    const samePk = await database.db
      .insertInto('person')
      .values({ id: 1, name: 'Other', active: 1, born: null })
      .execute()
      .catch((e: unknown) => e);
    expect(samePk).toMatchObject({ code: 'UNIQUE_VIOLATION', driverCode: 'SQLITE_CONSTRAINT_PRIMARYKEY' });
    const orphan = await database.db
      .insertInto('pet')
      .values({ id: 1, owner_id: 999, name: 'Rex' })
      .execute()
      .catch((e: unknown) => e);
    expect(orphan).toBeInstanceOf(ForeignKeyViolationError);
    expect(orphan).toMatchObject({ code: 'FOREIGN_KEY_VIOLATION', driverCode: 'SQLITE_CONSTRAINT_FOREIGNKEY' });
    const syntax = await sql`SELEC 1`.execute(database.db).catch((e: unknown) => e);
    expect(syntax).toBeInstanceOf(DatabaseError);
    expect(syntax).toMatchObject({ code: 'QUERY_FAILED', driverCode: 'SQLITE_ERROR' });
    // The workers are fine afterwards.
    expect(database.stats()).toMatchObject({ inUse: 0 });
    expect((await sql<{ one: number }>`SELECT 1 AS one`.execute(database.db)).rows).toEqual([{ one: 1 }]);
  });

  test('a failed transaction leaves no partial write; a nested one rolls back to its savepoint', async () => {
    await expect(
      database.transaction(async (trx) => {
        await trx.insertInto('person').values({ id: 10, name: 'Edsger', active: 1, born: null }).execute();
        throw new Error('changed my mind');
      }),
    ).rejects.toThrow('changed my mind');
    await database.transaction(async (trx) => {
      await trx.insertInto('person').values({ id: 11, name: 'Barbara', active: 1, born: null }).execute();
      await database
        .transaction(async (inner) => {
          await inner.insertInto('person').values({ id: 12, name: 'Donald', active: 1, born: null }).execute();
          throw new Error('inner only');
        })
        .catch(() => {});
    });
    const ids = (await database.db.selectFrom('person').select('id').where('id', '>=', 10).orderBy('id').execute()).map((r) => r.id);
    expect(ids).toEqual([11]);
  });

  test('a transaction is pinned to one worker: its writes are visible inside it, not outside before commit', async () => {
    let seenOutside: number | undefined;
    await database.transaction(async (trx) => {
      await trx.insertInto('person').values({ id: 20, name: 'Alan', active: 1, born: null }).execute();
      const inside = await trx.selectFrom('person').select('id').where('id', '=', 20).execute();
      expect(inside).toEqual([{ id: 20 }]);
      // A reader on another worker runs now (it does not wait for the writer) and sees the last commit.
      const outside = await database.db.selectFrom('person').select('id').where('id', '=', 20).execute();
      seenOutside = outside.length;
    });
    expect(seenOutside).toBe(0);
    expect(await database.db.selectFrom('person').select('id').where('id', '=', 20).execute()).toEqual([{ id: 20 }]);
  });

  test('SQLite refuses isolation levels it cannot give, before taking a connection', async () => {
    const error = await database.transaction(async () => {}, { isolation: 'read committed' }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InvalidOptionError);
    expect(error).toMatchObject({ option: 'isolation' });
    await database.transaction(async () => {}, { isolation: 'serializable' });
  });

  test('8 concurrent writers x 500 single-row inserts through 4 workers all land, without SQLITE_BUSY', async () => {
    const writers = Array.from({ length: 8 }, async (_, writer) => {
      for (let seq = 0; seq < 500; seq++) await database.db.insertInto('log').values({ writer, seq }).execute();
    });
    const outcomes = await Promise.allSettled(writers);
    expect(outcomes.filter((o) => o.status === 'rejected')).toEqual([]);
    const rows = await sql<{ n: number; writers: number }>`SELECT count(*) AS n, count(DISTINCT writer) AS writers FROM log`.execute(
      database.db,
    );
    expect(rows.rows).toEqual([{ n: 4000, writers: 8 }]);
    expect(database.stats().size).toBeGreaterThan(1);
  });

  test('a long read blocks neither the event loop nor writers on other workers', async () => {
    let ticks = 0;
    const interval = setInterval(() => ticks++, 10);
    try {
      let writesDoneFirst = false;
      const slow = SLOW.execute(database.db).then((result) => ({ result, writesDoneFirst }));
      for (let i = 0; i < 20; i++) await database.db.insertInto('pet').values({ owner_id: 1, name: `pet ${i}` }).execute();
      writesDoneFirst = true;
      const { result, writesDoneFirst: writesWereFirst } = await slow;
      expect(result.rows).toEqual([{ n: 10_000_000 }]);
      expect(writesWereFirst).toBe(true);
      // About 100 expected over a second; a blocked event loop would give none.
      expect(ticks).toBeGreaterThan(10);
    } finally {
      clearInterval(interval);
    }
  });

  test('a query past its deadline fails with QUERY_TIMEOUT; the pool keeps serving and the file stays intact', async () => {
    let ticks = 0;
    const interval = setInterval(() => ticks++, 10);
    const started = performance.now();
    const error = await database.withDeadline({ timeoutMs: 200 }, () => SLOW.execute(database.db)).catch((e: unknown) => e);
    const elapsed = performance.now() - started;
    clearInterval(interval);
    expect(error).toBeInstanceOf(QueryTimeoutError);
    // Generous: the deadline answers promptly, not when the query would have finished
    // (about a second, more under load); and the event loop ran meanwhile (the query runs
    // in a worker). A liveness bound, not a timing measurement: one tick is enough.
    expect(elapsed).toBeLessThan(900);
    expect(ticks).toBeGreaterThan(0);
    // The next queries are served (the terminated worker is replaced).
    const again = await Promise.all([1, 2, 3].map((n) => sql<{ n: number }>`SELECT ${n} AS n`.execute(database.db)));
    expect(again.map((r) => r.rows[0]!.n)).toEqual([1, 2, 3]);
    await database.db.insertInto('person').values({ id: 30, name: 'After deadline', active: 1, born: null }).execute();
    expect((await sql<{ integrity_check: string }>`PRAGMA integrity_check`.execute(database.db)).rows).toEqual([{ integrity_check: 'ok' }]);
  });

  test('a transaction cut off by its deadline leaves no partial write, and the next writers get through', async () => {
    const error = await database
      .transaction(
        async (trx) => {
          await trx.insertInto('person').values({ id: 40, name: 'Half done', active: 1, born: null }).execute();
          await SLOW.execute(trx);
          await trx.insertInto('person').values({ id: 41, name: 'Never', active: 1, born: null }).execute();
        },
        { timeoutMs: 300 },
      )
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(QueryTimeoutError);
    // The writer lock passes on once the terminated worker is gone: these do not hang.
    await Promise.all(
      [42, 43, 44].map((id) => database.db.insertInto('person').values({ id, name: `next ${id}`, active: 1, born: null }).execute()),
    );
    const ids = (await database.db.selectFrom('person').select('id').where('id', '>=', 40).orderBy('id').execute()).map((r) => r.id);
    expect(ids).toEqual([42, 43, 44]);
    expect((await sql<{ integrity_check: string }>`PRAGMA integrity_check`.execute(database.db)).rows).toEqual([{ integrity_check: 'ok' }]);
    await vi.waitFor(() => expect(database.stats()).toMatchObject({ inUse: 0 }));
  });

  test('sqlite::memory: is one worker, shared by many sessions, that keeps its data across queries', async () => {
    const memory = connect<DB>('sqlite::memory:', { pool: { max: 4 } });
    try {
      await sql`CREATE TABLE person (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, active INTEGER, born TEXT)`.execute(memory.db);
      await Promise.all(
        [1, 2, 3].map((id) => memory.db.insertInto('person').values({ id, name: `m${id}`, active: 1, born: null }).execute()),
      );
      const rows = await Promise.all([1, 2, 3].map(() => memory.db.selectFrom('person').select('id').orderBy('id').execute()));
      for (const result of rows) expect(result.map((r) => r.id)).toEqual([1, 2, 3]);
      // Several sessions at once, all on the one worker (a second worker would see an empty database).
      expect(memory.stats().size).toBeGreaterThan(1);
      // A transaction pins the worker: the other sessions' reads wait for it, then see its commit.
      let seenDuring: number[] | undefined;
      let seenOutside: number[] | undefined;
      await memory.transaction(async (trx) => {
        await trx.insertInto('person').values({ id: 4, name: 'm4', active: 1, born: null }).execute();
        const outside = memory.db.selectFrom('person').select('id').orderBy('id').execute();
        seenDuring = (await trx.selectFrom('person').select('id').orderBy('id').execute()).map((r) => r.id);
        void outside.then((r) => (seenOutside = r.map((row) => row.id)));
        // Still waiting: the worker is pinned to this transaction.
        expect(seenOutside).toBeUndefined();
      });
      await vi.waitFor(() => expect(seenOutside).toEqual([1, 2, 3, 4]));
      expect(seenDuring).toEqual([1, 2, 3, 4]);
    } finally {
      await memory.close();
    }
    expect(() => connect('sqlite::memory:', { sqlite: { workers: 2 } })).toThrow(InvalidOptionError);
    expect(() => connect('sqlite:./x.db', { sqlite: { workers: 0 } })).toThrow(InvalidOptionError);
  });


  test("a transaction of one database inside another's nests with its own database, as a savepoint", async () => {
    const first = connect<DB>('sqlite::memory:');
    const second = connect<DB>('sqlite::memory:');
    try {
      for (const database of [first, second]) {
        await sql`CREATE TABLE person (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, active INTEGER, born TEXT)`.execute(database.db);
      }
      const failure = await first
        .transaction(async (outer) => {
          await outer.insertInto('person').values({ id: 1, name: 'outer', active: 1, born: null }).execute();
          await second.transaction(async (other) => {
            await other.insertInto('person').values({ id: 1, name: 'second', active: 1, born: null }).execute();
            // The first database's transaction again, two levels down: a savepoint in it,
            // on its one worker (a new transaction there would wait for that worker forever).
            await first.transaction(async (inner) => {
              await inner.insertInto('person').values({ id: 2, name: 'inner', active: 1, born: null }).execute();
            });
          });
          throw new Error('undo the first database');
        })
        .catch((error: unknown) => error);
      expect(failure).toEqual(new Error('undo the first database'));
      // The savepoint's row went with its transaction; the second database committed its own.
      expect(await first.db.selectFrom('person').select('id').execute()).toEqual([]);
      expect(await second.db.selectFrom('person').select('name').execute()).toEqual([{ name: 'second' }]);
    } finally {
      await first.close();
      await second.close();
    }
  });
  test('a bad path fails fast with CANNOT_OPEN, not after the acquire timeout', async () => {
    const missingDir = connect<DB>(`sqlite:${join(dir, 'no-such-dir', 'x.db')}`, { pool: { acquireTimeoutMs: 60_000 } });
    const notADatabase = join(dir, 'not-a-database.db');
    writeFileSync(notADatabase, 'this is plain text, not a SQLite database. '.repeat(100));
    const garbage = connect<DB>(`sqlite:${notADatabase}`, { pool: { acquireTimeoutMs: 60_000 } });
    try {
      const [first, second] = await Promise.all([
        sql`SELECT 1`.execute(missingDir.db).catch((e: unknown) => e),
        sql`SELECT 1`.execute(garbage.db).catch((e: unknown) => e),
      ]);
      expect(first).toBeInstanceOf(ConnectionError);
      expect(first).toMatchObject({ code: 'CANNOT_OPEN', permanent: true, driverCode: 'SQLITE_CANTOPEN' });
      expect(second).toMatchObject({ code: 'CANNOT_OPEN', permanent: true, driverCode: 'SQLITE_NOTADB' });
    } finally {
      await missingDir.close();
      await garbage.close();
    }
  });

  test('URLs: relative, absolute and // forms; others are refused', () => {
    expect(() => connect('sqlite:')).toThrow(InvalidOptionError);
    expect(() => connect('sqlite:./app.db?mode=ro')).toThrow(/no \?query/);
    expect(() => connect('oracle://db/x')).toThrow(/sqlite:/);
    // Connections open lazily: these only parse.
    for (const url of ['sqlite:./rel.db', 'sqlite:rel.db', `sqlite:${join(dir, 'a.db')}`, `sqlite://${join(dir, 'a.db')}`, 'sqlite://:memory:']) {
      void connect(url).close();
    }
  });

  test('close() leaves no worker thread: a process that connects, queries and closes exits on its own', async () => {
    const fixture = fileURLToPath(new URL('../fixtures/sqlite-close-then-exit.ts', import.meta.url));
    const { code, signal, stdout, stderr } = await runNode([fixture, join(dir, 'child.db')]);
    expect({ code, signal, stderr }).toEqual({ code: 0, signal: null, stderr: '' });
    const report = JSON.parse(stdout.trim()) as { count: number; size: number; after: number };
    expect(report.count).toBe(4);
    expect(report.size).toBeGreaterThan(1);
    expect(report.after).toBe(0);
  });
});
