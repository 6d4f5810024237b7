/**
 * `npm run bench:db [-- --json] [-- --seconds 1] [-- --rounds 3]`
 *
 * `SELECT 1` and a primary-key lookup on a 10k-row table, pool max 10, with 1, 10 and 100
 * concurrent callers, side by side in one run against real servers (SLUICE_PG_URL, else
 * 127.0.0.1:5432):
 * - PostgreSQL: `pg.Pool` with unnamed and with named statements, Kysely's PostgresDialect
 *   over `pg.Pool`, and sluice (its driver directly, and Kysely over sluice).
 * - MySQL/MariaDB (SLUICE_MYSQL_URL, else 127.0.0.1:3306): the `mysql2` pool with `query`
 *   and with `execute`, Kysely's MysqlDialect over it, and sluice (driver and Kysely).
 * Each cell is the median of `rounds` runs, clients in rotating order. Compare ratios:
 * the machine is shared and noisy.
 */
import { Kysely, MysqlDialect, PostgresDialect, sql } from 'kysely';
import { createPool as createMysqlPool } from 'mysql2';
import mysqlPromise from 'mysql2/promise';
import pg from 'pg';
import { connect } from '../src/orm/connect.js';
import { benchArgs, formatTable, measureClient, medianOfRounds } from './measure.js';

const MAX = 10;
const ROWS = 10_000;
const PG_URL = process.env.SLUICE_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const MYSQL_URL = process.env.SLUICE_MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/test';

interface BenchDB {
  sluice_bench_pk: { id: number; name: string; score: number };
}

type Query = 'select1' | 'pk';

interface Client {
  readonly target: 'postgres' | 'mysql';
  readonly name: string;
  readonly run: (query: Query, id: number) => Promise<unknown>;
  readonly close: () => Promise<void>;
}

const PK_SQL = 'SELECT id, name, score FROM sluice_bench_pk WHERE id = $1';

function pgPool(named: boolean): Client {
  const pool = new pg.Pool({ connectionString: PG_URL, max: MAX });
  return {
    target: 'postgres',
    name: named ? 'pg.Pool (named)' : 'pg.Pool (unnamed)',
    run: (query, id) =>
      query === 'select1'
        ? pool.query(named ? { name: 'b_select1', text: 'SELECT 1' } : 'SELECT 1')
        : pool.query(named ? { name: 'b_pk', text: PK_SQL, values: [id] } : { text: PK_SQL, values: [id] }),
    close: () => pool.end(),
  };
}

function kyselyOverPg(): Client {
  const db = new Kysely<BenchDB>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: PG_URL, max: MAX }) }) });
  return {
    target: 'postgres',
    name: 'kysely PostgresDialect',
    run: (query, id) =>
      query === 'select1'
        ? sql`SELECT 1`.execute(db)
        : db.selectFrom('sluice_bench_pk').select(['id', 'name', 'score']).where('id', '=', id).execute(),
    close: () => db.destroy(),
  };
}

const MYSQL_PK_SQL = 'SELECT id, name, score FROM sluice_bench_pk WHERE id = ?';

function mysql2Pool(prepared: boolean): Client {
  const pool = mysqlPromise.createPool({ uri: MYSQL_URL, connectionLimit: MAX });
  const run = (text: string, values: unknown[]): Promise<unknown> =>
    prepared ? pool.execute(text, values as never) : pool.query(text, values);
  return {
    target: 'mysql',
    name: prepared ? 'mysql2 pool (execute)' : 'mysql2 pool (query)',
    run: (query, id) => (query === 'select1' ? run('SELECT 1', []) : run(MYSQL_PK_SQL, [id])),
    close: () => pool.end(),
  };
}

function kyselyOverMysql(): Client {
  const db = new Kysely<BenchDB>({
    dialect: new MysqlDialect({ pool: createMysqlPool({ uri: MYSQL_URL, connectionLimit: MAX }) }),
  });
  return {
    target: 'mysql',
    name: 'kysely MysqlDialect',
    run: (query, id) =>
      query === 'select1'
        ? sql`SELECT 1`.execute(db)
        : db.selectFrom('sluice_bench_pk').select(['id', 'name', 'score']).where('id', '=', id).execute(),
    close: () => db.destroy(),
  };
}

function sluiceClients(target: 'postgres' | 'mysql'): Array<() => Client> {
  const url = target === 'postgres' ? PG_URL : MYSQL_URL;
  const pk = target === 'postgres' ? PK_SQL : MYSQL_PK_SQL;
  const driverLevel = (): Client => {
    const database = connect<BenchDB>(url, { pool: { max: MAX } });
    return {
      target,
      name: 'sluice (driver)',
      run: (query, id) =>
        database.pool.use((connection) => (query === 'select1' ? connection.run('SELECT 1', []) : connection.run(pk, [id]))),
      close: () => database.close(),
    };
  };
  const kyselyLevel = (): Client => {
    const database = connect<BenchDB>(url, { pool: { max: MAX } });
    const db = database.db;
    return {
      target,
      name: 'sluice (kysely)',
      run: (query, id) =>
        query === 'select1'
          ? sql`SELECT 1`.execute(db)
          : db.selectFrom('sluice_bench_pk').select(['id', 'name', 'score']).where('id', '=', id).execute(),
      close: () => database.close(),
    };
  };
  return [driverLevel, kyselyLevel];
}

const CLIENTS: Readonly<Record<'postgres' | 'mysql', ReadonlyArray<() => Client>>> = {
  postgres: [() => pgPool(false), () => pgPool(true), kyselyOverPg, ...sluiceClients('postgres')],
  mysql: [() => mysql2Pool(false), () => mysql2Pool(true), kyselyOverMysql, ...sluiceClients('mysql')],
};
const BASELINE = { postgres: 'kysely PostgresDialect', mysql: 'kysely MysqlDialect' } as const;

async function seedMysql(): Promise<void> {
  const connection = await mysqlPromise.createConnection({ uri: MYSQL_URL });
  await connection.query(
    'CREATE TABLE IF NOT EXISTS sluice_bench_pk (id int PRIMARY KEY, name varchar(64) NOT NULL, score int NOT NULL) ENGINE=InnoDB',
  );
  const [rows] = await connection.query('SELECT COUNT(*) AS n FROM sluice_bench_pk');
  if (Number((rows as Array<{ n: number }>)[0]!.n) !== ROWS) {
    await connection.query('TRUNCATE sluice_bench_pk');
    const values = Array.from({ length: ROWS }, (_, i) => [i + 1, `name ${i + 1}`, (i + 1) % 1000]);
    await connection.query('INSERT INTO sluice_bench_pk (id, name, score) VALUES ?', [values]);
  }
  await connection.end();
}

async function seed(): Promise<void> {
  const client = new pg.Client({ connectionString: PG_URL });
  await client.connect();
  await client.query('CREATE TABLE IF NOT EXISTS sluice_bench_pk (id int PRIMARY KEY, name text NOT NULL, score int NOT NULL)');
  const { rows } = await client.query<{ n: number }>('SELECT count(*)::int AS n FROM sluice_bench_pk');
  if (rows[0]!.n !== ROWS) {
    await client.query('TRUNCATE sluice_bench_pk');
    await client.query(
      `INSERT INTO sluice_bench_pk SELECT g, 'name ' || g, g % 1000 FROM generate_series(1, ${ROWS}) AS g`,
    );
    await client.query('ANALYZE sluice_bench_pk');
  }
  await client.end();
}

interface Result {
  readonly target: string;
  readonly client: string;
  readonly query: Query;
  readonly concurrency: number;
  readonly qps: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
}

async function main(): Promise<void> {
  const { json, seconds, rounds, levels, extra } = benchArgs(
    { seconds: '1', concurrency: '1,10,100' },
    { targets: 'postgres,mysql' },
  );
  const targets = String(extra.targets).split(',') as Array<'postgres' | 'mysql'>;
  if (targets.includes('postgres')) await seed();
  if (targets.includes('mysql')) await seedMysql();

  const results: Result[] = [];
  for (const target of targets) {
    const clients = CLIENTS[target];
    for (const query of ['select1', 'pk'] as const) {
      for (const concurrency of levels) {
        const cells = await medianOfRounds(clients.length, rounds, async (index) => {
          const { client, measured } = await measureClient(clients[index]!, (c, id) => c.run(query, id), {
            concurrency,
            seconds,
            ids: ROWS,
          });
          return { target: client.target, client: client.name, query, concurrency, qps: measured.opsPerSec, ...measured };
        });
        results.push(...cells);
      }
    }
  }

  if (json) {
    const json = results.map(({ target, client, query, concurrency, qps, p50Ms, p99Ms }) => ({
      target,
      client,
      query,
      concurrency,
      qps: Math.round(qps),
      p50Ms: Number(p50Ms.toFixed(3)),
      p99Ms: Number(p99Ms.toFixed(3)),
    }));
    process.stdout.write(`${JSON.stringify({ results: json })}\n`);
    return;
  }
  const rows = results.map((result) => {
    const baseline = results.find(
      (other) =>
        other.target === result.target &&
        other.query === result.query &&
        other.concurrency === result.concurrency &&
        other.client === BASELINE[result.target as 'postgres' | 'mysql'],
    );
    return [
      result.target,
      result.query,
      String(result.concurrency),
      result.client,
      Math.round(result.qps).toLocaleString('en-US'),
      result.p50Ms.toFixed(3),
      result.p99Ms.toFixed(3),
      baseline === undefined ? '' : `${(result.qps / baseline.qps).toFixed(2)}x`,
    ];
  });
  console.log(`pool max ${MAX}, median of ${rounds} rounds of ${seconds} s (compare ratios; absolute numbers vary by machine)`);
  console.log(formatTable(['target', 'query', 'callers', 'client', 'qps', 'p50 ms', 'p99 ms', 'vs kysely dialect'], rows, 4));
}

await main();
