// SQLite sessions over a shared, pipelined set of workers: many pool sessions, few threads.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { QueryTimeoutError } from '../../src/index.js';
import { connect, type Database } from '../../src/orm/connect.js';

interface DB {
  item: { id: number; label: string; score: number };
  log: { writer: number; seq: number };
  ledger: { tx: number; part: number };
}

/** Keeps a worker busy for about a second on the development machine. */
const SLOW = sql<{ n: number }>`WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10000000) SELECT count(*) AS n FROM c`;
const ITEMS = 1000;

let dir: string;
const databases: Array<Database<DB>> = [];

function open(file: string, workers: number, max = 64): Database<DB> {
  const database = connect<DB>(`sqlite:${join(dir, file)}`, { pool: { max }, sqlite: { workers } });
  databases.push(database);
  return database;
}

async function seed(database: Database<DB>): Promise<void> {
  await sql`CREATE TABLE IF NOT EXISTS item (id INTEGER PRIMARY KEY, label TEXT NOT NULL, score INTEGER NOT NULL)`.execute(database.db);
  await sql`CREATE TABLE IF NOT EXISTS log (writer INTEGER NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (writer, seq))`.execute(database.db);
  await sql`CREATE TABLE IF NOT EXISTS ledger (tx INTEGER NOT NULL, part INTEGER NOT NULL, PRIMARY KEY (tx, part))`.execute(database.db);
  await database.transaction(async (trx) => {
    for (let id = 1; id <= ITEMS; id++) await trx.insertInto('item').values({ id, label: `item ${id}`, score: id % 7 }).execute();
  });
}

const lookup = (database: Database<DB>, id: number) =>
  database.db.selectFrom('item').select(['id', 'label', 'score']).where('id', '=', id).execute();

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'sluice-sessions-'));
});
afterAll(async () => {
  await Promise.all(databases.map((database) => database.close()));
  rmSync(dir, { recursive: true, force: true });
});

describe('SQLite sessions over shared workers', () => {
  test('64 concurrent readers over 2 workers each get their own, correct rows', async () => {
    const database = open('readers.db', 2);
    await seed(database);
    const wrong: unknown[] = [];
    await Promise.all(
      Array.from({ length: 64 }, async (_, reader) => {
        for (let i = 0; i < 50; i++) {
          const id = ((reader * 50 + i) % ITEMS) + 1;
          const rows = await lookup(database, id);
          if (rows.length !== 1 || rows[0]!.id !== id || rows[0]!.label !== `item ${id}` || rows[0]!.score !== id % 7) wrong.push({ id, rows });
        }
      }),
    );
    expect(wrong).toEqual([]);
    // More sessions than threads: sessions are not threads.
    expect(database.stats().size).toBeGreaterThan(2);
  });

  test('a read past its deadline ends its worker; the reads and writes queued behind it on that worker are sent again, and none fails', async () => {
    // One worker: everything below is pipelined behind the slow read on the same thread.
    const database = open('bystanders.db', 1);
    await seed(database);
    const slow = database.withDeadline({ timeoutMs: 300 }, () => SLOW.execute(database.db)).catch((error: unknown) => error);
    // Let the slow read start, then queue behind it.
    await new Promise((resolve) => setTimeout(resolve, 50));
    const reads = Array.from({ length: 20 }, (_, i) => lookup(database, i + 1).then((rows) => rows.map((row) => row.id)));
    const writes = Array.from({ length: 10 }, (_, seq) => database.db.insertInto('log').values({ writer: 99, seq }).execute());
    expect(await slow).toBeInstanceOf(QueryTimeoutError);
    const readOutcomes = await Promise.allSettled(reads);
    const writeOutcomes = await Promise.allSettled(writes);
    expect(readOutcomes.filter((outcome) => outcome.status === 'rejected')).toEqual([]);
    expect(readOutcomes.map((outcome) => (outcome as PromiseFulfilledResult<number[]>).value)).toEqual(
      Array.from({ length: 20 }, (_, i) => [i + 1]),
    );
    expect(writeOutcomes.filter((outcome) => outcome.status === 'rejected')).toEqual([]);
    // Each write landed exactly once: sent again only because it never started.
    const logged = await sql<{ n: number; distinct_seq: number }>`SELECT count(*) AS n, count(DISTINCT seq) AS distinct_seq FROM log WHERE writer = 99`.execute(
      database.db,
    );
    expect(logged.rows).toEqual([{ n: 10, distinct_seq: 10 }]);
  });

  test('autocommit writers and transactions interleave on 2 workers: every row lands, no BUSY, each transaction whole', async () => {
    const database = open('writers.db', 2, 16);
    await seed(database);
    const writers = Array.from({ length: 8 }, async (_, writer) => {
      for (let seq = 0; seq < 500; seq++) await database.db.insertInto('log').values({ writer, seq }).execute();
    });
    const transactions = Array.from({ length: 4 }, async (_, t) => {
      for (let n = 0; n < 20; n++) {
        const tx = t * 100 + n;
        await database.transaction(async (trx) => {
          await trx.insertInto('ledger').values({ tx, part: 1 }).execute();
          // Inside the transaction its own first write is visible: pinned to one worker.
          const own = await trx.selectFrom('ledger').select('part').where('tx', '=', tx).execute();
          if (own.length !== 1) throw new Error(`transaction ${tx} saw ${own.length} rows of its own`);
          await trx.insertInto('ledger').values({ tx, part: 2 }).execute();
        });
      }
    });
    // Readers outside never see half a transaction.
    let halves = 0;
    let reading = true;
    const reader = (async () => {
      while (reading) {
        const counts = await sql<{ parts: number }>`SELECT count(*) AS parts FROM ledger GROUP BY tx HAVING count(*) <> 2`.execute(database.db);
        halves += counts.rows.length;
      }
    })();
    const outcomes = await Promise.allSettled([...writers, ...transactions]);
    reading = false;
    await reader;
    expect(outcomes.filter((outcome) => outcome.status === 'rejected')).toEqual([]);
    expect(halves).toBe(0);
    const log = await sql<{ n: number; writers: number }>`SELECT count(*) AS n, count(DISTINCT writer) AS writers FROM log`.execute(database.db);
    expect(log.rows).toEqual([{ n: 4000, writers: 8 }]);
    const ledger = await sql<{ n: number }>`SELECT count(*) AS n FROM ledger`.execute(database.db);
    expect(ledger.rows).toEqual([{ n: 160 }]);
  });

  test('a transaction keeps its worker to itself: reads of other sessions go to the other worker meanwhile', async () => {
    const database = open('pinned.db', 2);
    await seed(database);
    await database.transaction(async (trx) => {
      await trx.updateTable('item').set({ label: 'changed' }).where('id', '=', 1).execute();
      // 40 reads from other sessions while the transaction is open: none waits for it (a
      // deadline far below how long the test would wait otherwise), none sees its change.
      const outside = await Promise.all(
        Array.from({ length: 40 }, () => database.withDeadline({ timeoutMs: 5_000 }, () => lookup(database, 1))),
      );
      for (const rows of outside) expect(rows).toEqual([{ id: 1, label: 'item 1', score: 1 }]);
      expect(await trx.selectFrom('item').select('label').where('id', '=', 1).execute()).toEqual([{ label: 'changed' }]);
    });
    expect(await lookup(database, 1)).toEqual([{ id: 1, label: 'changed', score: 1 }]);
  });

  test('a script that leaves a transaction open keeps it to its own session, and it is rolled back when the session goes back', async () => {
    const database = open('script.db', 2);
    await seed(database);
    await sql.raw('INSERT INTO log (writer, seq) VALUES (7, 1); BEGIN; INSERT INTO log (writer, seq) VALUES (7, 2)').execute(database.db);
    // Another session's write is not swallowed by that transaction (the writer worker is shared).
    await database.db.insertInto('log').values({ writer: 7, seq: 3 }).execute();
    const rows = await sql<{ seq: number }>`SELECT seq FROM log WHERE writer = 7 ORDER BY seq`.execute(database.db);
    expect(rows.rows.map((row) => row.seq)).toEqual([1, 3]);
  });
});
