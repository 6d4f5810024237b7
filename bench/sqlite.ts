/**
 * `npm run bench:sqlite [-- --json] [-- --seconds 1] [-- --rounds 3]`
 *
 * A point lookup on a 10k-row table and a single-row insert, with 1 and 64 concurrent
 * callers, side by side in one run on the same SQLite file (WAL, synchronous=NORMAL):
 * `better-sqlite3` called directly on the main thread, Kysely's `SqliteDialect` (main
 * thread), and sluice, whose statements run in worker threads, with 1 and 2 workers
 * (`sqlite.workers`) shared by up to 64 sessions (`pool.max`), pipelined (Kysely over
 * sluice, and sluice's driver directly).
 *
 * Then the price of blocking: the event loop's delay (p99, `monitorEventLoopDelay`) while a
 * one-second query runs. A main-thread driver stalls every other callback for the whole
 * query; sluice's workers leave the loop free.
 *
 * Each cell is the median of `rounds` runs, clients in rotating order. Compare ratios: the
 * machine is shared and noisy.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import Database from 'better-sqlite3';
import { Kysely, SqliteDialect, sql } from 'kysely';
import { connect } from '../src/orm/connect.js';
import { benchArgs, formatTable, measureClient, medianOfRounds } from './measure.js';

const ROWS = 10_000;

interface BenchDB {
  bench_pk: { id: number; name: string; score: number };
  bench_insert: { id: number | null; name: string; score: number };
}

type Query = 'pk' | 'insert';

interface Client {
  readonly name: string;
  readonly run: (query: Query, id: number) => Promise<unknown>;
  /** Runs `sqlText` (the one-second query) once. */
  readonly slow: (sqlText: string) => Promise<unknown>;
  readonly close: () => Promise<void>;
}

/** The baseline every ratio is taken against. */
const DIRECT = 'better-sqlite3 (main thread)';
const KYSELY_DIALECT = 'kysely SqliteDialect (main thread)';

const PK_SQL = 'SELECT id, name, score FROM bench_pk WHERE id = ?';
const INSERT_SQL = 'INSERT INTO bench_insert (name, score) VALUES (?, ?)';

function openFile(file: string): Database.Database {
  const database = new Database(file);
  database.pragma('journal_mode = WAL');
  database.pragma('synchronous = NORMAL');
  return database;
}

function direct(file: string): Client {
  const database = openFile(file);
  const pk = database.prepare(PK_SQL);
  const insert = database.prepare(INSERT_SQL);
  return {
    name: DIRECT,
    // async, as every other client: the caller awaits a promise either way.
    run: async (query, id) => (query === 'pk' ? pk.all(id) : insert.run(`name ${id}`, id % 1000)),
    slow: async (sqlText) => database.prepare(sqlText).all(),
    close: async () => {
      database.close();
    },
  };
}

function kyselyDialect(file: string): Client {
  const db = new Kysely<BenchDB>({ dialect: new SqliteDialect({ database: openFile(file) }) });
  return {
    name: KYSELY_DIALECT,
    run: (query, id) =>
      query === 'pk'
        ? db.selectFrom('bench_pk').select(['id', 'name', 'score']).where('id', '=', id).execute()
        : db.insertInto('bench_insert').values({ name: `name ${id}`, score: id % 1000 }).execute(),
    slow: (sqlText) => sql.raw(sqlText).execute(db),
    close: () => db.destroy(),
  };
}

/** Sessions enough for every caller (they are cheap); `workers` threads shared by them. */
function sluiceOptions(workers: number): { readonly pool: { readonly max: number }; readonly sqlite: { readonly workers: number } } {
  return { pool: { max: 64 }, sqlite: { workers } };
}

function sluiceKysely(file: string, workers: number): Client {
  const database = connect<BenchDB>(`sqlite:${file}`, sluiceOptions(workers));
  const db = database.db;
  return {
    name: `sluice (kysely), ${workers} worker${workers === 1 ? '' : 's'}`,
    run: (query, id) =>
      query === 'pk'
        ? db.selectFrom('bench_pk').select(['id', 'name', 'score']).where('id', '=', id).execute()
        : db.insertInto('bench_insert').values({ name: `name ${id}`, score: id % 1000 }).execute(),
    slow: (sqlText) => sql.raw(sqlText).execute(db),
    close: () => database.close(),
  };
}

function sluiceDriver(file: string, workers: number): Client {
  const database = connect<BenchDB>(`sqlite:${file}`, sluiceOptions(workers));
  return {
    name: `sluice (driver), ${workers} worker${workers === 1 ? '' : 's'}`,
    run: (query, id) =>
      database.pool.use((connection) =>
        query === 'pk' ? connection.run(PK_SQL, [id]) : connection.run(INSERT_SQL, [`name ${id}`, id % 1000]),
      ),
    slow: (sqlText) => database.pool.use((connection) => connection.run(sqlText, [])),
    close: () => database.close(),
  };
}

function seed(file: string): void {
  const database = openFile(file);
  database.exec('CREATE TABLE bench_pk (id INTEGER PRIMARY KEY, name TEXT NOT NULL, score INTEGER NOT NULL)');
  database.exec('CREATE TABLE bench_insert (id INTEGER PRIMARY KEY, name TEXT NOT NULL, score INTEGER NOT NULL)');
  const insert = database.prepare('INSERT INTO bench_pk (id, name, score) VALUES (?, ?, ?)');
  database.transaction(() => {
    for (let id = 1; id <= ROWS; id++) insert.run(id, `name ${id}`, id % 1000);
  })();
  database.close();
}

/** A recursive count that takes about `targetMs` on this machine, calibrated on the main thread. */
function calibrateSlowQuery(file: string, targetMs: number): string {
  const database = openFile(file);
  const text = (n: number): string =>
    `WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ${n}) SELECT count(*) AS n FROM c`;
  let n = 200_000;
  for (;;) {
    const started = performance.now();
    database.prepare(text(n)).all();
    const elapsed = performance.now() - started;
    if (elapsed >= targetMs / 4) {
      database.close();
      return text(Math.round((n * targetMs) / elapsed));
    }
    n *= 4;
  }
}

/** The event loop's p99 and largest delay (ms) while `client` runs `slowSql` once. */
async function loopDelayDuring(client: Client, slowSql: string): Promise<{ p99Ms: number; maxMs: number; queryMs: number }> {
  const histogram = monitorEventLoopDelay({ resolution: 5 });
  histogram.enable();
  // The histogram's timer must be ticking before the query starts: its first tick only
  // sets the baseline, so a loop blocked from the start would record nothing.
  await new Promise((resolve) => setTimeout(resolve, 50));
  const started = performance.now();
  await client.slow(slowSql);
  const queryMs = performance.now() - started;
  // A turn for the histogram to record the last delay.
  await new Promise((resolve) => setTimeout(resolve, 20));
  histogram.disable();
  return { p99Ms: histogram.percentile(99) / 1e6, maxMs: histogram.max / 1e6, queryMs };
}

interface Result {
  readonly client: string;
  readonly query: Query;
  readonly concurrency: number;
  readonly qps: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
}

async function main(): Promise<void> {
  const { json, seconds, rounds, levels } = benchArgs({ seconds: '1', concurrency: '1,64' });
  const directory = mkdtempSync(join(tmpdir(), 'sluice-bench-sqlite-'));
  const file = join(directory, 'bench.db');
  try {
    seed(file);
    const clients: ReadonlyArray<() => Client> = [
      () => direct(file),
      () => kyselyDialect(file),
      () => sluiceKysely(file, 1),
      () => sluiceKysely(file, 2),
      () => sluiceDriver(file, 1),
      () => sluiceDriver(file, 2),
    ];

    const results: Result[] = [];
    for (const query of ['pk', 'insert'] as const) {
      for (const concurrency of levels) {
        const cells = await medianOfRounds(clients.length, rounds, async (index) => {
          const { client, measured } = await measureClient(clients[index]!, (c, id) => c.run(query, id), {
            concurrency,
            seconds,
            ids: ROWS,
          });
          return { client: client.name, query, concurrency, qps: measured.opsPerSec, ...measured };
        });
        results.push(...cells);
      }
    }

    const slowSql = calibrateSlowQuery(file, 1_000);
    const delays: Array<{ client: string; loopDelayP99Ms: number; loopDelayMaxMs: number; queryMs: number }> = [];
    for (const make of clients) {
      const client = make();
      // Workers started and warm before the clock runs.
      await client.run('pk', 1);
      const { p99Ms, maxMs, queryMs } = await loopDelayDuring(client, slowSql);
      await client.close();
      delays.push({ client: client.name, loopDelayP99Ms: p99Ms, loopDelayMaxMs: maxMs, queryMs });
    }

    if (json) {
      const json = {
        results: results.map(({ client, query, concurrency, qps, p50Ms, p99Ms }) => ({
          target: 'sqlite',
          client,
          query,
          concurrency,
          qps: Math.round(qps),
          p50Ms: Number(p50Ms.toFixed(3)),
          p99Ms: Number(p99Ms.toFixed(3)),
        })),
        eventLoopDelay: delays.map(({ client, loopDelayP99Ms, loopDelayMaxMs, queryMs }) => ({
          client,
          loopDelayP99Ms: Number(loopDelayP99Ms.toFixed(1)),
          loopDelayMaxMs: Number(loopDelayMaxMs.toFixed(1)),
          queryMs: Math.round(queryMs),
        })),
      };
      process.stdout.write(`${JSON.stringify(json)}\n`);
      return;
    }
    const ratio = (result: Result, baselineClient: string): string => {
      const baseline = results.find(
        (other) => other.query === result.query && other.concurrency === result.concurrency && other.client === baselineClient,
      );
      return baseline === undefined ? '' : `${(result.qps / baseline.qps).toFixed(2)}x`;
    };
    const rows = results.map((result) => [
      result.query,
      String(result.concurrency),
      result.client,
      Math.round(result.qps).toLocaleString('en-US'),
      result.p50Ms.toFixed(3),
      result.p99Ms.toFixed(3),
      ratio(result, DIRECT),
      // Kysely over sluice against Kysely's own dialect: the same query builder on both sides.
      result.client.includes('kysely') ? ratio(result, KYSELY_DIALECT) : '',
    ]);
    console.log(`median of ${rounds} rounds of ${seconds} s (compare ratios; absolute numbers vary by machine)`);
    console.log(
      formatTable(['query', 'callers', 'client', 'qps', 'p50 ms', 'p99 ms', 'vs direct', 'vs kysely dialect'], rows, 3),
    );
    console.log('\nevent-loop delay while a one-second query runs');
    console.log(
      formatTable(
        ['client', 'query ms', 'loop delay p99 ms', 'max ms'],
        delays.map((delay) => [
          delay.client,
          Math.round(delay.queryMs).toLocaleString('en-US'),
          delay.loopDelayP99Ms.toFixed(1),
          delay.loopDelayMaxMs.toFixed(1),
        ]),
        1,
      ),
    );
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
}

await main();
