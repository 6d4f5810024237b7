/**
 * `npm run bench:pool [-- --json] [-- --seconds 0.5] [-- --rounds 3]`
 *
 * Acquire then release of a dummy resource, `max` 10, with 1, 10 and 100 concurrent
 * callers, side by side in one run: sluice, tarn, generic-pool and pg-pool (a pg.Pool
 * with a stub client). Every pool is given an acquire timeout, and sluice keeps its
 * stats, so each does the same bookkeeping a production pool would.
 *
 * Each cell runs `rounds` times, pools in rotating order, and reports the median round:
 * this machine is shared and noisy, so compare the ratios, not the absolute numbers.
 * Acquire latency is sampled (one acquire in 8 is timed) to keep the clock off the hot path.
 */
import { EventEmitter } from 'node:events';
import genericPool from 'generic-pool';
import PgPool from 'pg-pool';
import { Pool as TarnPool } from 'tarn';
import { createPool } from '../src/index.js';
import { benchArgs, formatTable, measure, medianOfRounds } from './measure.js';

const MAX = 10;
const ACQUIRE_TIMEOUT_MS = 30_000;
const SAMPLE_EVERY = 8;

interface Subject {
  readonly name: string;
  /** One acquire + release; returns when the resource is back. */
  readonly cycle: () => Promise<void>;
  readonly close: () => Promise<void>;
}

interface Dummy {
  readonly id: number;
}

let nextId = 0;
const makeDummy = (): Dummy => ({ id: nextId++ });

function sluice(): Subject {
  const pool = createPool<Dummy>({
    create: makeDummy,
    destroy: () => {},
    max: MAX,
    min: MAX,
    acquireTimeoutMs: ACQUIRE_TIMEOUT_MS,
  });
  const options = { timeoutMs: ACQUIRE_TIMEOUT_MS };
  return {
    name: 'sluice',
    cycle: async () => {
      const lease = await pool.acquire(options);
      lease.release();
    },
    close: () => pool.close(),
  };
}

function tarn(): Subject {
  const pool = new TarnPool<Dummy>({
    create: (callback: (error: Error | null, resource: Dummy) => void) => callback(null, makeDummy()),
    destroy: () => {},
    min: MAX,
    max: MAX,
    acquireTimeoutMillis: ACQUIRE_TIMEOUT_MS,
  });
  return {
    name: 'tarn',
    cycle: async () => {
      const resource = await pool.acquire().promise;
      pool.release(resource);
    },
    close: async () => {
      await pool.destroy();
    },
  };
}

function generic(): Subject {
  const pool = genericPool.createPool<Dummy>(
    { create: async () => makeDummy(), destroy: async () => {} },
    { max: MAX, min: MAX, acquireTimeoutMillis: ACQUIRE_TIMEOUT_MS },
  );
  return {
    name: 'generic-pool',
    cycle: async () => {
      const resource = await pool.acquire();
      await pool.release(resource);
    },
    close: async () => {
      await pool.drain();
      await pool.clear();
    },
  };
}

/** Just enough of pg.Client for pg-pool: connects at once, never errors. */
class StubClient extends EventEmitter {
  constructor(_options: unknown) {
    super();
  }
  readonly _queryable = true;
  readonly _ending = false;
  connect(callback: (error?: Error) => void): void {
    process.nextTick(callback);
  }
  end(callback?: () => void): void {
    this.emit('end');
    if (callback) process.nextTick(callback);
  }
}

function pgPool(): Subject {
  const pool = new PgPool({
    Client: StubClient,
    max: MAX,
    connectionTimeoutMillis: ACQUIRE_TIMEOUT_MS,
    idleTimeoutMillis: 0,
  });
  return {
    name: 'pg-pool',
    cycle: async () => {
      const client = await pool.connect();
      client.release();
    },
    close: () => pool.end(),
  };
}

const FACTORIES: ReadonlyArray<() => Subject> = [sluice, tarn, generic, pgPool];

interface Cell {
  readonly pool: string;
  readonly concurrency: number;
  readonly opsPerSec: number;
  readonly p50Us: number;
  readonly p99Us: number;
}

async function runCell(subject: Subject, concurrency: number, seconds: number): Promise<Cell> {
  const measured = await measure(subject.cycle, { concurrency, seconds, warmupOps: 2_000, sampleEvery: SAMPLE_EVERY });
  return {
    pool: subject.name,
    concurrency,
    opsPerSec: measured.opsPerSec,
    p50Us: measured.p50Ms * 1_000,
    p99Us: measured.p99Ms * 1_000,
  };
}

async function main(): Promise<void> {
  const { json, seconds, rounds, levels } = benchArgs({ seconds: '0.5', concurrency: '1,10,100' });
  const results: Cell[] = [];
  for (const concurrency of levels) {
    results.push(
      ...(await medianOfRounds(FACTORIES.length, rounds, async (index) => {
        const subject = FACTORIES[index]!();
        const cell = await runCell(subject, concurrency, seconds);
        await subject.close();
        return cell;
      })),
    );
  }

  if (json) {
    const round = (cell: Cell): Cell => ({
      pool: cell.pool,
      concurrency: cell.concurrency,
      opsPerSec: Math.round(cell.opsPerSec),
      p50Us: Number(cell.p50Us.toFixed(2)),
      p99Us: Number(cell.p99Us.toFixed(2)),
    });
    process.stdout.write(`${JSON.stringify({ results: results.map(round) })}\n`);
    return;
  }
  printTable(results);
}

function printTable(results: readonly Cell[]): void {
  const rows = results.map((cell) => {
    const peers = results.filter((other) => other.concurrency === cell.concurrency && other.pool !== 'sluice');
    const fastestPeer = Math.max(...peers.map((peer) => peer.opsPerSec));
    const ratio = cell.pool === 'sluice' ? `${(cell.opsPerSec / fastestPeer).toFixed(2)}x best peer` : '';
    return [
      String(cell.concurrency),
      cell.pool,
      Math.round(cell.opsPerSec).toLocaleString('en-US'),
      cell.p50Us.toFixed(2),
      cell.p99Us.toFixed(2),
      ratio,
    ];
  });
  console.log(`acquire + release, max ${MAX}, median of the rounds (compare ratios; absolute numbers vary by machine)`);
  console.log(formatTable(['callers', 'pool', 'ops/s', 'p50 µs', 'p99 µs', 'sluice vs fastest peer'], rows, 2));
}

await main();
