/**
 * `npm run bench:testing [-- --json] [-- --files 20] [-- --targets postgres,mysql,sqlite]`
 *
 * What sluice/testing's template saves: the time to a ready database per test file, made
 * from the run's template (migrated once per run), against an empty database migrated by
 * the file itself, which is what a suite without the kit does. For each target and schema:
 * - template: `createTestDatabase(template)`, then `SELECT count(*) FROM kysely_migration`;
 * - migrate per file: `createTestDatabase(template, { empty: true })` (a fresh empty
 *   database on the same server), `migrate(database, source)`, then the same query.
 * Both end with one query (and so one connection opened), and the count must be the
 * number of migrations. Two schemas: the example service's (1 migration, 5 tables), and
 * 50 synthetic migrations of one table each (6 columns, a primary key, an index, a foreign
 * key to the table before), a mature app's. Each cell is the median and p90 over `files`
 * test files, after one warm-up file each not counted; the two approaches alternate which
 * goes first, so drift hits both. `drop()` is timed apart, and so is what a run pays once:
 * `startTestRun()` (finding the server and migrating the template), and its `teardown()`.
 * PostgreSQL: SLUICE_PG_URL, else 127.0.0.1:5432; MySQL/MariaDB: SLUICE_MYSQL_URL, else
 * 127.0.0.1:3306 (never a container: a server that does not answer is skipped, with a
 * note); SQLite: temporary files. Every database opened, SQLite's too, starts its pool
 * afresh (for SQLite, its worker threads): both approaches pay that alike, and it is part
 * of what a test file waits for. Quote the ratios: absolute times vary by machine.
 */
import { type Kysely, type Migration, type MigrationProvider, sql } from 'kysely';
import { migrationProvider as serviceMigrations } from '../examples/service/src/migrations.js';
import { migrate, type MigrationSource } from '../src/orm/migrate/migrate.js';
import { createTestDatabase, startTestRun, type SqlBackend, type Template, type TestDatabase } from '../src/testing/index.js';
import { benchArgs, formatTable } from './measure.js';

const SYNTHETIC_MIGRATIONS = 50;

type SchemaName = 'service' | `${number} migrations`;
type Approach = 'template' | 'migrate per file';

interface Schema {
  readonly name: SchemaName;
  /** How many rows `kysely_migration` holds once it is applied. */
  readonly migrations: number;
  readonly source: (backend: SqlBackend) => MigrationSource;
}

/** Table `n` of the synthetic schema: 6 columns, a primary key, an index, and a foreign key to table `n - 1`. */
function syntheticMigration(n: number): Migration {
  const table = `bench_t${String(n).padStart(2, '0')}`;
  const previous = `bench_t${String(n - 1).padStart(2, '0')}`;
  return {
    async up(db: Kysely<unknown>) {
      let create = db.schema
        .createTable(table)
        .addColumn('id', 'integer', (column) => column.primaryKey())
        .addColumn('previous_id', 'integer')
        .addColumn('name', 'varchar(100)', (column) => column.notNull())
        .addColumn('code', 'varchar(40)', (column) => column.notNull())
        .addColumn('quantity', 'integer', (column) => column.notNull().defaultTo(0))
        .addColumn('note', 'text');
      if (n > 1) create = create.addForeignKeyConstraint(`${table}_previous_fk`, ['previous_id'], previous, ['id'], (fk) => fk.onDelete('cascade'));
      await create.execute();
      // The foreign key's column is what a real app indexes; the first table has none, so its name.
      await db.schema
        .createIndex(`${table}_${n > 1 ? 'previous' : 'name'}_idx`)
        .on(table)
        .column(n > 1 ? 'previous_id' : 'name')
        .execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropTable(table).execute();
    },
  };
}

/** 50 migrations named so that they sort in the order they apply. */
const syntheticProvider: MigrationProvider = {
  getMigrations: async () =>
    Object.fromEntries(
      Array.from({ length: SYNTHETIC_MIGRATIONS }, (_, i) => [
        `2024_01_01_${String(i + 1).padStart(3, '0')}_create_bench_t${String(i + 1).padStart(2, '0')}`,
        syntheticMigration(i + 1),
      ]),
    ),
};

const SCHEMAS: readonly Schema[] = [
  { name: 'service', migrations: 1, source: (backend) => ({ provider: serviceMigrations(backend) }) },
  { name: `${SYNTHETIC_MIGRATIONS} migrations`, migrations: SYNTHETIC_MIGRATIONS, source: () => ({ provider: syntheticProvider }) },
];

/** Nearest rank: the smallest sample with at least `q` of them at or below it. */
function quantile(samples: readonly number[], q: number): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.max(0, Math.ceil(q * sorted.length) - 1)] ?? NaN;
}

/** The trivial query that proves a database ready: its migrations are all there. */
async function checkReady(made: TestDatabase<unknown>, schema: Schema): Promise<void> {
  const { rows } = await sql<{ applied: number | string | bigint }>`SELECT count(*) AS applied FROM kysely_migration`.execute(made.database.db);
  const applied = Number(rows[0]?.applied);
  if (applied !== schema.migrations) throw new Error(`${made.dialect} ${schema.name}: ${applied} migrations applied, not ${schema.migrations}`);
}

/** One test file's database by one approach: the time to ready, then the time to drop it. */
async function oneFile(approach: Approach, template: Template, schema: Schema, backend: SqlBackend): Promise<{ readyMs: number; dropMs: number }> {
  const start = performance.now();
  const made = await createTestDatabase<unknown>(template, approach === 'template' ? {} : { empty: true });
  let readyMs: number;
  try {
    if (approach === 'migrate per file') await migrate(made.database, schema.source(backend));
    await checkReady(made, schema);
    readyMs = performance.now() - start;
  } catch (error) {
    await made.drop().catch(() => {});
    throw error;
  }
  const dropStart = performance.now();
  await made.drop();
  return { readyMs, dropMs: performance.now() - dropStart };
}

interface Cell {
  readonly target: SqlBackend;
  readonly schema: SchemaName;
  readonly approach: Approach;
  readonly files: number;
  readonly medianMs: number;
  readonly p90Ms: number;
  readonly dropMedianMs: number;
  /** The cell's median over the template's, same target and schema. */
  readonly vsTemplate: number;
}

interface OneOff {
  readonly target: SqlBackend;
  readonly schema: SchemaName;
  readonly label: string;
  readonly startTestRunMs: number;
  readonly teardownMs: number;
}

async function main(): Promise<void> {
  const { json, extra } = benchArgs({ seconds: '0', concurrency: '1' }, { files: '20', targets: 'postgres,mysql,sqlite' });
  const files = Number(extra.files);
  if (!Number.isInteger(files) || files < 1) throw new Error(`--files must be a positive integer, not ${extra.files}`);
  const targets = String(extra.targets).split(',') as SqlBackend[];
  for (const target of targets) {
    if (!['postgres', 'mysql', 'sqlite'].includes(target)) throw new Error(`unknown target ${target}: postgres, mysql or sqlite`);
  }

  const cells: Cell[] = [];
  const oneOffs: OneOff[] = [];
  const skipped: Array<{ target: SqlBackend; reason: string }> = [];
  for (const target of targets) {
    for (const schema of SCHEMAS) {
      const started = performance.now();
      const run = await startTestRun({
        backends: [target],
        migrations: schema.source,
        // The local server (or the URL in the environment variable), never a container.
        servers: { postgres: { image: false }, mysql: { image: false } },
        failOnMissing: false,
        log: () => {},
      });
      const startTestRunMs = performance.now() - started;
      let teardownMs = NaN;
      let label = '';
      try {
        const plan = run.plan.backends[target];
        if (plan === undefined || !plan.available || plan.template === undefined) {
          const reason = plan !== undefined && !plan.available ? plan.reason : 'no template';
          skipped.push({ target, reason });
          if (!json) console.log(`${target}: skipped (${reason})`);
          break;
        }
        label = plan.label;
        const template = plan.template;
        const approaches: readonly Approach[] = ['template', 'migrate per file'];
        // One file each not counted: the first connection, the JIT, the server's caches.
        for (const approach of approaches) await oneFile(approach, template, schema, target);
        const ready: Record<Approach, number[]> = { template: [], 'migrate per file': [] };
        const drops: Record<Approach, number[]> = { template: [], 'migrate per file': [] };
        for (let file = 0; file < files; file++) {
          // Alternate which goes first, so drift (the server's background work, the other tenants) hits both.
          for (const approach of file % 2 === 0 ? approaches : [...approaches].reverse()) {
            const { readyMs, dropMs } = await oneFile(approach, template, schema, target);
            ready[approach].push(readyMs);
            drops[approach].push(dropMs);
          }
        }
        const templateMedian = quantile(ready.template, 0.5);
        for (const approach of approaches) {
          const medianMs = quantile(ready[approach], 0.5);
          cells.push({
            target,
            schema: schema.name,
            approach,
            files,
            medianMs,
            p90Ms: quantile(ready[approach], 0.9),
            dropMedianMs: quantile(drops[approach], 0.5),
            vsTemplate: medianMs / templateMedian,
          });
        }
      } finally {
        const tornDown = performance.now();
        await run.teardown();
        teardownMs = performance.now() - tornDown;
      }
      oneOffs.push({ target, schema: schema.name, label, startTestRunMs, teardownMs });
    }
  }

  if (json) {
    process.stdout.write(`${JSON.stringify({ files, results: cells, oneOff: oneOffs, skipped })}\n`);
    return;
  }
  console.log(`Time to a ready database per test file: median and p90 of ${files} files each, approaches alternating (compare ratios; absolute ms vary by machine)`);
  console.log(
    formatTable(
      ['target', 'schema', 'approach', 'ready median ms', 'ready p90 ms', 'drop median ms', 'time vs template'],
      cells.map((cell) => [
        cell.target,
        cell.schema,
        cell.approach,
        cell.medianMs.toFixed(1),
        cell.p90Ms.toFixed(1),
        cell.dropMedianMs.toFixed(1),
        cell.approach === 'template'
          ? '1.00x'
          : `${cell.vsTemplate.toFixed(2)}x (template ${(cell.vsTemplate >= 1 ? cell.vsTemplate : 1 / cell.vsTemplate).toFixed(1)}x ${cell.vsTemplate >= 1 ? 'faster' : 'slower'})`,
      ]),
      3,
    ),
  );
  console.log('');
  console.log('Paid once per run: startTestRun() finds the server and migrates the template; teardown() drops the run\'s databases');
  console.log(
    formatTable(
      ['target', 'schema', 'server', 'startTestRun ms', 'teardown ms'],
      oneOffs.map((once) => [once.target, once.schema, once.label, once.startTestRunMs.toFixed(1), once.teardownMs.toFixed(1)]),
      3,
    ),
  );
}

await main();
