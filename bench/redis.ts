/**
 * `npm run bench:redis [-- --json] [-- --seconds 1] [-- --rounds 3] [-- --concurrency 1,32]`
 *
 * sluice's Redis pieces against their plain counterparts, side by side in one run:
 * - dedicated connections (`connectRedis`: a sluice pool of ioredis connections, each
 *   command under a deadline that would unblock it on the server) against plain ioredis:
 *   GET (ioredis: its one shared, pipelined connection, and a connection per caller, the
 *   pattern sluice's pool has), RPUSH + BLPOP on one connection
 *   (ioredis: a duplicate connection per caller, as blocking consumers use it), and a
 *   WATCH/MULTI/EXEC transaction (ioredis: a duplicate per caller);
 * - primary-key lookups and an aggregate on PostgreSQL, uncached (plain Kysely through sluice)
 *   against cached (`createQueryCache`, entries warm), and a model's `find(id)` both ways.
 * Each cell is the median of `rounds` runs, clients in rotating order. Redis: SLUICE_REDIS_URL,
 * else 127.0.0.1:6379; PostgreSQL: SLUICE_PG_URL, else 127.0.0.1:5432 (skipped if it does not answer).
 */
import { type Generated, sql } from 'kysely';
import { Redis } from 'ioredis';
import { connect, type Database } from '../src/orm/connect.js';
import { defineModels, repository } from '../src/orm/model/index.js';
import type { QueryCache } from '../src/index.js';
import { connectRedis, createQueryCache, type RedisClient } from '../src/redis.js';
import { listening } from './listening.js';
import { benchArgs, formatTable, measure, medianOfRounds } from './measure.js';

const REDIS_URL = process.env.SLUICE_REDIS_URL ?? 'redis://127.0.0.1:6379';
const PG_URL = process.env.SLUICE_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const ROWS = 10_000;
const HOT_IDS = 1_000;
const POOL_MAX = 32;
const PREFIX = `sluice_bench_${process.pid}`;

interface BenchDB {
  sluice_bench_cache: { id: Generated<number>; name: string; grp: number; score: number };
}
class Row extends defineModels<BenchDB>()('sluice_bench_cache') {}

/** One side of a comparison: made before its run, closed after. */
interface Client {
  readonly name: string;
  readonly operation: (id: number) => Promise<unknown>;
  readonly close: () => Promise<void>;
  /** Runs before measuring: the cached clients read every id once, so the cells measure hits. */
  readonly warm?: () => Promise<void>;
}

interface Cell {
  readonly part: string;
  readonly operation: string;
  readonly concurrency: number;
  readonly client: string;
  readonly opsPerSec: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  /** The client the ratio is taken against. */
  readonly baseline: string;
}

/** ioredis connections, one per caller, made on first use: the plain way to run blocking commands. */
function perCaller(): { readonly take: () => Promise<Redis>; readonly give: (r: Redis) => void; readonly close: () => Promise<void> } {
  const idle: Redis[] = [];
  const all: Redis[] = [];
  return {
    take: async () => {
      const found = idle.pop();
      if (found !== undefined) return found;
      const made = new Redis(REDIS_URL);
      all.push(made);
      return made;
    },
    give: (r) => void idle.push(r),
    close: async () => {
      await Promise.all(all.map((r) => r.quit()));
    },
  };
}

/** ioredis with a connection of its own per caller, made on first use: the plain way to run blocking commands. */
function ioredisPerCaller(work: (redis: Redis, id: number) => Promise<unknown>) {
  return (): Client => {
    const connections = perCaller();
    return {
      name: 'ioredis (connection per caller)',
      operation: async (id) => {
        const redis = await connections.take();
        await work(redis, id);
        connections.give(redis);
      },
      close: connections.close,
    };
  };
}

/** sluice's dedicated connections: a pool of POOL_MAX. */
function sluice(work: (client: RedisClient, id: number) => Promise<unknown>) {
  return (): Client => {
    const client = connectRedis(REDIS_URL, { pool: { max: POOL_MAX } });
    return { name: 'sluice (pooled, deadline)', operation: (id) => work(client, id), close: () => client.close() };
  };
}

const redisClients: Record<string, Array<() => Client>> = {
  GET: [
    () => {
      const redis = new Redis(REDIS_URL);
      return { name: 'ioredis (shared connection)', operation: () => redis.get(`${PREFIX}:k`), close: async () => void (await redis.quit()) };
    },
    ioredisPerCaller((redis) => redis.get(`${PREFIX}:k`)),
    sluice((client) => client.command('GET', [`${PREFIX}:k`], { timeoutMs: 1_000 })),
  ],
  'RPUSH + BLPOP': [
    ioredisPerCaller(async (redis, id) => {
      await redis.rpush(`${PREFIX}:list:${id}`, 'x');
      await redis.blpop(`${PREFIX}:list:${id}`, 1);
    }),
    sluice((client, id) =>
      client.withConnection(
        async (session) => {
          await session.command('RPUSH', [`${PREFIX}:list:${id}`, 'x']);
          await session.blpop([`${PREFIX}:list:${id}`], 1);
        },
        { timeoutMs: 1_000 },
      ),
    ),
  ],
  'WATCH/MULTI/EXEC': [
    ioredisPerCaller(async (redis, id) => {
      const key = `${PREFIX}:counter:${id}`;
      await redis.watch(key);
      const value = Number((await redis.get(key)) ?? 0);
      await redis.multi().set(key, String(value + 1)).exec();
    }),
    sluice((client, id) => {
      const key = `${PREFIX}:counter:${id}`;
      return client.transaction(
        async (session) => {
          const value = Number((await session.command<string | null>('GET', [key])) ?? 0);
          return [{ name: 'SET', args: [key, String(value + 1)] }];
        },
        { watch: [key], timeoutMs: 1_000 },
      );
    }),
  ],
};

async function seed(database: Database<BenchDB>): Promise<void> {
  const db = database.db;
  await sql`DROP TABLE IF EXISTS sluice_bench_cache`.execute(db);
  await sql`CREATE TABLE sluice_bench_cache (id serial PRIMARY KEY, name text NOT NULL, grp int NOT NULL, score int NOT NULL)`.execute(db);
  await sql`INSERT INTO sluice_bench_cache (name, grp, score) SELECT 'name ' || g, g % 100, (g * 7919) % 1000 FROM generate_series(1, ${ROWS}) AS g`.execute(db);
  await sql`ANALYZE sluice_bench_cache`.execute(db);
}

/** The PostgreSQL cells: the same read uncached and through the cache. */
function cacheClients(database: Database<BenchDB>, redis: Redis): Record<string, Array<() => Client>> {
  const db = database.db;
  const rows = repository(database, Row);
  const pk = (id: number) => db.selectFrom('sluice_bench_cache').selectAll().where('id', '=', id);
  // Each caller group's aggregate: 100 groups of 100 rows.
  const aggregate = (id: number) =>
    db
      .selectFrom('sluice_bench_cache')
      .select(({ fn }) => ['grp', fn.avg<number>('score').as('mean'), fn.countAll<number>().as('n')])
      .where('grp', '>=', id % 10)
      .groupBy('grp');
  let cache: QueryCache<BenchDB> | undefined;
  const cached = (): QueryCache<BenchDB> => (cache ??= createQueryCache(database, { redis, prefix: PREFIX, ttlMs: 600_000 }));
  const plain = (name: string, operation: (id: number) => Promise<unknown>) => (): Client => ({ name, operation, close: async () => {} });
  const warmed = (name: string, operation: (id: number) => Promise<unknown>) => (): Client => ({
    name,
    operation,
    close: async () => {},
    warm: async () => {
      for (let id = 1; id <= HOT_IDS; id++) await operation(id);
    },
  });
  return {
    'PK lookup': [
      plain('uncached (sluice + Kysely)', (id) => pk(id).executeTakeFirst()),
      warmed('cached', (id) => cached().executeTakeFirst(pk(id))),
    ],
    'model find(id)': [plain('uncached', (id) => rows.find(id)), warmed('cached', (id) => rows.find(id, { cache: cached() }))],
    'aggregate (GROUP BY, 10k rows)': [plain('uncached (sluice + Kysely)', (id) => aggregate(id).execute()), warmed('cached', (id) => cached().execute(aggregate(id)))],
  };
}

async function runPart(
  part: string,
  table: Record<string, Array<() => Client>>,
  levels: readonly number[],
  seconds: number,
  rounds: number,
): Promise<Cell[]> {
  const cells: Cell[] = [];
  for (const [operation, makers] of Object.entries(table)) {
    for (const concurrency of levels) {
      const measured = await medianOfRounds(makers.length, rounds, async (index) => {
        const client = makers[index]!();
        await client.warm?.();
        let next = 0;
        const result = await measure(() => client.operation((next++ % HOT_IDS) + 1), { concurrency, seconds, warmupOps: 50, sampleEvery: 1 });
        await client.close();
        return { ...result, name: client.name };
      });
      for (const result of measured) {
        cells.push({ part, operation, concurrency, client: result.name, opsPerSec: result.opsPerSec, p50Ms: result.p50Ms, p99Ms: result.p99Ms, baseline: measured[0]!.name });
      }
    }
  }
  return cells;
}

async function main(): Promise<void> {
  const { json, seconds, rounds, levels } = benchArgs({ seconds: '1', concurrency: '1,32' });
  if (!(await listening(REDIS_URL, 6379))) throw new Error('bench:redis needs Redis: set SLUICE_REDIS_URL or run one on 127.0.0.1:6379.');
  const admin = new Redis(REDIS_URL);
  const cells: Cell[] = [];
  let database: Database<BenchDB> | undefined;
  try {
    await admin.set(`${PREFIX}:k`, 'value');
    cells.push(...(await runPart('dedicated connections', redisClients, levels, seconds, rounds)));
    if (await listening(PG_URL, 5432)) {
      database = connect<BenchDB>(PG_URL, { pool: { max: POOL_MAX } });
      await seed(database);
      cells.push(...(await runPart('query cache (PostgreSQL)', cacheClients(database, admin), levels, seconds, rounds)));
    } else if (!json) {
      console.log(`PostgreSQL does not answer at ${new URL(PG_URL).host}: the query cache part is skipped.`);
    }
  } finally {
    // Leave nothing behind, even when a cell failed.
    if (database !== undefined) {
      await sql`DROP TABLE IF EXISTS sluice_bench_cache`.execute(database.db);
      await database.close();
    }
    for (let cursor = '0'; ; ) {
      const [next, keys] = await admin.scan(cursor, 'MATCH', `*${PREFIX}*`, 'COUNT', 1000);
      if (keys.length > 0) await admin.del(...keys);
      if ((cursor = next) === '0') break;
    }
    await admin.quit();
  }

  const ratio = (cell: Cell): number => {
    const base = cells.find((c) => c.part === cell.part && c.operation === cell.operation && c.concurrency === cell.concurrency && c.client === cell.baseline);
    return cell.opsPerSec / base!.opsPerSec;
  };
  if (json) {
    const out = cells.map((cell) => ({
      part: cell.part,
      operation: cell.operation,
      concurrency: cell.concurrency,
      client: cell.client,
      opsPerSec: Math.round(cell.opsPerSec),
      p50Ms: Number(cell.p50Ms.toFixed(3)),
      p99Ms: Number(cell.p99Ms.toFixed(3)),
      vsBaseline: Number(ratio(cell).toFixed(2)),
      baseline: cell.baseline,
    }));
    process.stdout.write(`${JSON.stringify({ seconds, rounds, poolMax: POOL_MAX, results: out })}\n`);
    return;
  }
  console.log(`median of ${rounds} rounds of ${seconds} s; sluice pools max ${POOL_MAX}; compare ratios (absolute numbers vary by machine)`);
  const rows = cells.map((cell) => [
    cell.part,
    cell.operation,
    String(cell.concurrency),
    cell.client,
    Math.round(cell.opsPerSec).toLocaleString('en-US'),
    cell.p50Ms.toFixed(3),
    cell.p99Ms.toFixed(3),
    `${ratio(cell).toFixed(2)}x`,
  ]);
  console.log(formatTable(['part', 'operation', 'callers', 'client', 'ops/s', 'p50 ms', 'p99 ms', 'vs first'], rows, 4));
}

await main();
