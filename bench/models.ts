/**
 * `npm run bench:models [-- --json] [-- --seconds 1] [-- --rounds 3] [-- --targets sqlite,postgres,mysql]`
 *
 * What models cost over plain Kysely, side by side in one run, on each target:
 * - reading 10,000 rows as plain Kysely rows, and as model instances (`users.query()` and
 *   `users.selectFrom()`, whose rows are hydrated by a Kysely plugin);
 * - 100 parents with 10 children each: eager loading (`.with('posts')`, 2 queries) against
 *   the N+1 loop (1 + 100 queries).
 * - hydrating 10,000 rows already read (no I/O): the cost of instances by itself.
 * One caller; each cell is the median of `rounds` runs, clients in rotating order.
 * PostgreSQL: SLUICE_PG_URL, else 127.0.0.1:5432; MySQL/MariaDB: SLUICE_MYSQL_URL, else
 * 127.0.0.1:3306; SQLite: a temporary file. A server that does not answer is skipped.
 */
import { type Generated, sql } from 'kysely';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type Database } from '../src/orm/connect.js';
import { defineModels, hasMany, repository } from '../src/orm/model/index.js';
import { listening } from './listening.js';
import { benchArgs, formatTable, measure, medianOfRounds } from './measure.js';

const ROWS = 10_000;
const PARENTS = 100;
const CHILDREN = 10;
const PG_URL = process.env.SLUICE_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const MYSQL_URL = process.env.SLUICE_MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/test';

interface BenchDB {
  sluice_bench_model_users: { id: Generated<number>; name: string; email: string; age: number; bio: string | null };
  sluice_bench_model_posts: { id: Generated<number>; user_id: number; title: string; views: Generated<number> };
}

const Model = defineModels<BenchDB>();

class User extends Model('sluice_bench_model_users') {
  static readonly relations = { posts: hasMany(() => Post, { foreignKey: 'user_id' }) };
  get displayName(): string {
    return `${this.name} <${this.email}>`;
  }
}

class Post extends Model('sluice_bench_model_posts') {}

type Target = 'sqlite' | 'postgres' | 'mysql';

async function seed(database: Database<BenchDB>, target: Target): Promise<void> {
  const db = database.db;
  await sql`DROP TABLE IF EXISTS sluice_bench_model_posts`.execute(db);
  await sql`DROP TABLE IF EXISTS sluice_bench_model_users`.execute(db);
  const id =
    target === 'postgres' ? sql.raw('id serial PRIMARY KEY') : target === 'mysql' ? sql.raw('id int AUTO_INCREMENT PRIMARY KEY') : sql.raw('id integer PRIMARY KEY AUTOINCREMENT');
  await sql`CREATE TABLE sluice_bench_model_users (${id}, name varchar(100) NOT NULL, email varchar(200) NOT NULL, age int NOT NULL, bio varchar(500))`.execute(db);
  await sql`CREATE TABLE sluice_bench_model_posts (${id}, user_id int NOT NULL, title varchar(200) NOT NULL, views int NOT NULL DEFAULT 0)`.execute(db);
  await sql`CREATE INDEX sluice_bench_model_posts_user ON sluice_bench_model_posts (user_id)`.execute(db);
  for (let start = 0; start < ROWS; start += 1_000) {
    const values = Array.from({ length: 1_000 }, (_, i) => ({
      name: `user ${start + i}`,
      email: `user${start + i}@example.com`,
      age: (start + i) % 90,
      bio: i % 3 === 0 ? null : 'likes databases',
    }));
    await db.insertInto('sluice_bench_model_users').values(values).execute();
  }
  const parents = await db.selectFrom('sluice_bench_model_users').select('id').orderBy('id').limit(PARENTS).execute();
  await db
    .insertInto('sluice_bench_model_posts')
    .values(parents.flatMap(({ id: userId }) => Array.from({ length: CHILDREN }, (_, n) => ({ user_id: userId, title: `post ${n} of ${userId}` }))))
    .execute();
}

interface Cell {
  readonly target: Target;
  readonly workload: 'read 10k rows' | 'hydrate 10k rows read before (no I/O)' | `${number} parents x ${number} children`;
  readonly client: string;
  readonly opsPerSec: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
}

async function main(): Promise<void> {
  const { json, seconds, rounds, extra } = benchArgs({ seconds: '1', concurrency: '1' }, { targets: 'sqlite,postgres,mysql' });
  const targets = String(extra.targets).split(',') as Target[];
  const sqliteDir = mkdtempSync(join(tmpdir(), 'sluice-bench-models-'));
  const cells: Cell[] = [];
  try {
    for (const target of targets) {
      const url = target === 'sqlite' ? `sqlite:${join(sqliteDir, 'bench.db')}` : target === 'postgres' ? PG_URL : MYSQL_URL;
      if (target !== 'sqlite' && !(await listening(url, target === 'mysql' ? 3306 : 5432))) {
        if (!json) console.log(`${target}: no server answers, skipped`);
        continue;
      }
      const database = connect<BenchDB>(url, { pool: { max: 4 } });
      try {
        await seed(database, target);
        const users = repository(database, User);
        const posts = repository(database, Post);
        const db = database.db;
        const parentIds = (await db.selectFrom('sluice_bench_model_users').select('id').orderBy('id').limit(PARENTS).execute()).map((row) => row.id);

        const reads: Array<[string, () => Promise<unknown[]>]> = [
          ['plain Kysely rows', () => db.selectFrom('sluice_bench_model_users').selectAll().execute()],
          ['model instances: query()', () => users.query().execute()],
          ['model instances: selectFrom()', () => users.selectFrom().execute()],
        ];
        const eager: Array<[string, () => Promise<unknown>]> = [
          ['eager: .with(posts), 2 queries', () => users.query((qb) => qb.where('id', 'in', parentIds)).with('posts').execute()],
          [
            `N+1 loop: 1 + ${PARENTS} queries`,
            async () => {
              const parents = await users.query((qb) => qb.where('id', 'in', parentIds)).execute();
              const loaded = [];
              for (const parent of parents) {
                loaded.push({ parent, posts: await posts.query((qb) => qb.where('user_id', '=', parent.id).orderBy('id')).execute() });
              }
              return loaded;
            },
          ],
        ];
        // Every client must read the same thing.
        for (const [name, run] of reads) {
          const rows = await run();
          if (rows.length !== ROWS) throw new Error(`${name} read ${rows.length} rows, not ${ROWS}`);
        }
        const options = { concurrency: 1, seconds, warmupOps: 3, sampleEvery: 1 };
        const readResults = await medianOfRounds(reads.length, rounds, (i) => measure(reads[i]![1], options));
        readResults.forEach((result, i) => cells.push({ target, workload: 'read 10k rows', client: reads[i]![0], ...result }));
        // What hydrating costs by itself, next to the reads above.
        const fetched = await db.selectFrom('sluice_bench_model_users').selectAll().execute();
        const [hydrated] = await medianOfRounds(1, rounds, () => measure(async () => users.hydrate(fetched), { ...options, warmupOps: 20 }));
        cells.push({ target, workload: 'hydrate 10k rows read before (no I/O)', client: 'users.hydrate(rows)', ...hydrated! });
        const eagerResults = await medianOfRounds(eager.length, rounds, (i) => measure(eager[i]![1], options));
        eagerResults.forEach((result, i) =>
          cells.push({ target, workload: `${PARENTS} parents x ${CHILDREN} children`, client: eager[i]![0], ...result }),
        );
        await sql`DROP TABLE IF EXISTS sluice_bench_model_posts`.execute(db);
        await sql`DROP TABLE IF EXISTS sluice_bench_model_users`.execute(db);
      } finally {
        await database.close();
      }
    }
  } finally {
    rmSync(sqliteDir, { recursive: true, force: true });
  }

  // Time per operation against the first client of the same target and workload.
  const baselineOf = (cell: Cell): Cell => cells.find((c) => c.target === cell.target && c.workload === cell.workload)!;
  const withRatio = cells.map((cell) => ({ ...cell, msPerOp: 1_000 / cell.opsPerSec, timeVsFirst: baselineOf(cell).opsPerSec / cell.opsPerSec }));
  if (json) {
    process.stdout.write(`${JSON.stringify({ rounds, seconds, results: withRatio })}\n`);
    return;
  }
  console.log(`1 caller, pool max 4, median of ${rounds} rounds of ${seconds} s (compare ratios; absolute numbers vary by machine)`);
  console.log(
    formatTable(
      ['target', 'workload', 'client', 'ops/s', 'ms/op', 'p99 ms', 'time vs first row'],
      withRatio.map((cell) => [
        cell.target,
        cell.workload,
        cell.client,
        cell.opsPerSec.toFixed(1),
        cell.msPerOp.toFixed(2),
        cell.p99Ms.toFixed(2),
        `${cell.timeVsFirst.toFixed(2)}x`,
      ]),
      3,
    ),
  );
}

await main();
