import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { testServerUrl } from 'sluice/testing/vitest';
import { startNode, type RunningChild } from '../support/run-node.js';

const pgUrl = testServerUrl('postgres') ?? '';
const redisUrl = testServerUrl('redis') ?? '';

const LIMIT = 12;
const PROCESSES = 4;
const LEASE_MS = 2_000;

interface Sample {
  /** Connections per process (by application_name suffix), read from pg_stat_activity. */
  readonly perProcess: readonly number[];
  readonly total: number;
  /** Whether Redis, read after pg_stat_activity, still counted the killed process's slots. */
  readonly deadStillCounted: boolean | undefined;
}

describe.skipIf(pgUrl === '' || redisUrl === '')('a connection budget shared through Redis, 4 processes on real PostgreSQL', () => {
  let monitor: pg.Client;
  let redis: Redis;

  beforeAll(async () => {
    monitor = new pg.Client({ connectionString: pgUrl });
    await monitor.connect();
    redis = new Redis(redisUrl);
  });
  afterAll(async () => {
    await monitor.end();
    redis.disconnect();
  });

  test('together they never hold more than the limit, every query completes, and a killed process frees its share at lease expiry', async () => {
    const run = `sluice_budget_${randomBytes(4).toString('hex')}`;
    const holdersKey = `{${run}}:holders`;
    const children: RunningChild[] = [];
    for (let index = 0; index < PROCESSES; index++) {
      const url = new URL(pgUrl);
      url.searchParams.set('application_name', `${run}_${index}`);
      children.push(
        startNode(['test/fixtures/budget-load.ts'], {
          env: {
            SLUICE_PG_URL: url.toString(),
            SLUICE_REDIS_URL: redisUrl,
            BUDGET_KEY: run,
            BUDGET_LIMIT: String(LIMIT),
            LEASE_MS: String(LEASE_MS),
          },
          guardMs: 60_000,
        }),
      );
    }
    const [killed, ...survivors] = children as [RunningChild, ...RunningChild[]];

    const slotsOf = async (child: RunningChild): Promise<number> => {
      const holders = await redis.hgetall(holdersKey);
      return Object.entries(holders)
        .filter(([holder]) => holder.split(':')[1] === String(child.pid))
        .reduce((sum, [, count]) => sum + Number(count), 0);
    };
    const samples: Sample[] = [];
    let killedAfterSample = Infinity;
    const sample = async (): Promise<Sample> => {
      const { rows } = await monitor.query<{ application_name: string; connections: number }>(
        `SELECT application_name, count(*)::int AS connections FROM pg_stat_activity WHERE application_name LIKE $1 GROUP BY 1`,
        [`${run}_%`],
      );
      const perProcess = children.map((_, index) => rows.find((row) => row.application_name === `${run}_${index}`)?.connections ?? 0);
      const deadStillCounted = samples.length >= killedAfterSample ? (await slotsOf(killed)) > 0 : undefined;
      const taken: Sample = { perProcess, total: perProcess.reduce((a, b) => a + b, 0), deadStillCounted };
      samples.push(taken);
      return taken;
    };
    /** Samples until `done` says so; fails if it never does (a guard, not a timing assertion). */
    const sampleUntil = async (what: string, done: (latest: Sample) => Promise<boolean> | boolean): Promise<void> => {
      const giveUpAt = Date.now() + 30_000;
      for (;;) {
        if (await done(await sample())) return;
        if (Date.now() > giveUpAt) throw new Error(`never saw: ${what}`);
        await sleep(5);
      }
    };

    try {
      await sampleUntil('every process running queries', () => children.every((child) => child.output().stdout.includes('RUNNING')));
      // Under load: all 40 callers want connections, the budget allows 12.
      await sampleUntil('the whole budget in use', (latest) => latest.total === LIMIT);
      await sampleUntil('the process to kill holding slots', async () => (await slotsOf(killed)) > 0);

      const deadSlots = await slotsOf(killed);
      killedAfterSample = samples.length;
      killed.kill('SIGKILL');
      // Its connections die with it, but its slots stay counted until its lease expires...
      await sampleUntil('the killed process gone from PostgreSQL', (latest) => latest.perProcess[0] === 0);
      expect(await slotsOf(killed)).toBe(deadSlots);
      // ...then the others take them up.
      await sampleUntil(
        'the survivors using the freed share',
        (latest) => latest.deadStillCounted === false && latest.total > LIMIT - deadSlots,
      );

      for (const child of survivors) child.kill('SIGTERM');
      const outcomes = await Promise.all(children.map((child) => child.exited));
      expect(outcomes[0]!.signal).toBe('SIGKILL');
      for (const outcome of outcomes.slice(1)) {
        expect(outcome.stderr).toBe('');
        expect(outcome.code).toBe(0);
        const report = JSON.parse(outcome.stdout.trim().split('\n').at(-1)!) as { completed: number; failures: string[] };
        expect(report.failures).toEqual([]);
        expect(report.completed).toBeGreaterThan(0);
      }

      // The headline: never more than the limit, in any sample.
      expect(Math.max(...samples.map((s) => s.total))).toBeLessThanOrEqual(LIMIT);
      // While Redis still counted the dead process's slots, nobody reused them.
      const whileCounted = samples.filter((s) => s.deadStillCounted === true);
      expect(whileCounted.length).toBeGreaterThan(0);
      for (const s of whileCounted) expect(s.total - s.perProcess[0]!).toBeLessThanOrEqual(LIMIT - deadSlots);
      // Closed pools leave nothing behind in Redis.
      expect(await redis.hgetall(holdersKey)).toEqual({});
    } finally {
      for (const child of children) child.kill('SIGKILL');
      await Promise.all(children.map((child) => child.exited));
      await redis.del(holdersKey, `{${run}}:leases`, `{${run}}:waiting`);
    }
  });
});
