import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { testServerUrl } from 'sluice/testing/vitest';
import { createPool, type DestroyReason, InvalidOptionError, type Pool, PoolTimeoutError } from '../../src/index.js';
import {
  BudgetUnavailableError,
  redisConnectionBudget,
  type RedisConnectionBudget,
  type RedisConnectionBudgetOptions,
} from '../../src/drivers/redis/redis-connection-budget.js';
import { runNode } from '../support/run-node.js';
import { closedPort, eventually, viaProxy } from './fault-helpers.js';
import { TcpProxy } from './tcp-proxy.js';

const redisUrl = testServerUrl('redis') ?? '';

/** Every message and stack in an error's cause chain. */
function textOf(error: unknown): string {
  const parts: string[] = [];
  for (let current = error; current instanceof Error; current = current.cause) parts.push(current.message, current.stack ?? '');
  return parts.join('\n');
}

/** Resources that only count themselves: the budget is what is under test. */
class Counted {
  alive = 0;
  peak = 0;
  readonly destroyReasons: DestroyReason[] = [];
  pool(budget: RedisConnectionBudget, max = 5): Pool<object> {
    const pool = createPool<object>({
      max,
      budget,
      create: () => {
        this.peak = Math.max(this.peak, ++this.alive);
        return {};
      },
      destroy: () => {
        this.alive--;
      },
    });
    pool.on('destroy', ({ reason }) => this.destroyReasons.push(reason));
    return pool;
  }
}

describe.skipIf(redisUrl === '')('the Redis connection budget under faults (real Redis)', () => {
  let redis: Redis;
  let key: string;
  const pools: Array<Pool<object>> = [];
  const proxies: TcpProxy[] = [];
  const budget = (options: Partial<RedisConnectionBudgetOptions> = {}): RedisConnectionBudget =>
    redisConnectionBudget({ url: redisUrl, key, limit: 3, ...options });
  const holders = (): Promise<Record<string, string>> => redis.hgetall(`{${key}}:holders`);
  const proxy = async (): Promise<TcpProxy> => {
    const { hostname, port } = new URL(redisUrl);
    const started = await TcpProxy.start(hostname, Number(port || 6379));
    proxies.push(started);
    return started;
  };
  const via = (through: TcpProxy): string => viaProxy(redisUrl, through);

  beforeAll(() => {
    redis = new Redis(redisUrl);
  });
  afterEach(async () => {
    await Promise.all(pools.splice(0).map((pool) => pool.close()));
    await Promise.all(proxies.splice(0).map((started) => started.close()));
    await redis.del(`{${key}}:holders`, `{${key}}:leases`, `{${key}}:waiting`);
  });
  afterAll(() => redis.disconnect());
  const track = <P extends Pool<object>>(pool: P): P => {
    pools.push(pool);
    return pool;
  };
  const newKey = (): void => {
    key = `sluice_budget_test_${randomBytes(4).toString('hex')}`;
  };

  test("fail-closed: Redis unreachable, nothing is created and the caller's deadline ends the wait, with the cause and no password", async () => {
    newKey();
    const counted = new Counted();
    const pool = track(counted.pool(budget({ url: `redis://:hunter2@127.0.0.1:${await closedPort()}`, redisTimeoutMs: 200 })));
    const error = await pool.acquire({ timeoutMs: 600 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PoolTimeoutError);
    expect(error).toMatchObject({ reason: 'create-failed' });
    expect((error as Error).cause).toBeInstanceOf(BudgetUnavailableError);
    expect((error as Error).cause).toMatchObject({ code: 'BUDGET_UNAVAILABLE' });
    expect(counted.peak).toBe(0);
    expect(textOf(error)).not.toContain('hunter2');
  });

  test('a URL naming a database Redis does not have fails callers at once with UNKNOWN_DATABASE, not as an outage', async () => {
    newKey();
    const url = new URL(redisUrl);
    url.pathname = '/9999';
    const counted = new Counted();
    const pool = track(counted.pool(budget({ url: url.toString(), whenUnavailable: { localLimit: 2 } })));
    const error = await pool.acquire({ timeoutMs: 20_000 }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'POOL_CREATE_FAILED', cause: { code: 'UNKNOWN_DATABASE' } });
    expect(counted.peak).toBe(0);
  });

  test('local-limit fallback: Redis unreachable, up to localLimit are created; once Redis answers they are counted there', async () => {
    newKey();
    const through = await proxy();
    through.setMode('refuse');
    const counted = new Counted();
    const local = budget({ url: via(through), redisTimeoutMs: 200, whenUnavailable: { localLimit: 2 } });
    const pool = track(counted.pool(local));
    const leases = await Promise.all([pool.acquire({ timeoutMs: 5_000 }), pool.acquire({ timeoutMs: 5_000 })]);
    expect(counted.alive).toBe(2);
    expect(local.stats()).toMatchObject({ held: 2, available: false });
    const third = await pool.acquire({ timeoutMs: 300 }).catch((e: unknown) => e);
    expect(third).toMatchObject({ code: 'POOL_TIMEOUT', reason: 'budget' });
    expect(counted.peak).toBe(2);

    through.setMode('pass');
    expect(await eventually(async () => Object.keys(await holders()).length > 0, 20_000), 'the budget reaches Redis again').toBe(true);
    expect(Object.values(await holders())).toEqual(['2']);
    expect(local.stats()).toMatchObject({ held: 2, available: true });
    for (const lease of leases) lease.release();
  });

  test('cut off from Redis past its lease, a process gives its idle connections up before others may take the slots', async () => {
    newKey();
    const through = await proxy();
    const counted = new Counted();
    const cutOff = budget({ url: via(through), leaseMs: 600, renewIntervalMs: 100, redisTimeoutMs: 100 });
    const cutPool = track(counted.pool(cutOff));
    const held = await Promise.all([cutPool.acquire(), cutPool.acquire(), cutPool.acquire()]);
    for (const lease of held) lease.release();
    expect(cutPool.stats()).toMatchObject({ size: 3, idle: 3 });

    const other = track(counted.pool(budget()));
    const waiting = other.acquire({ timeoutMs: 20_000 });
    through.setMode('stall');
    const lease = await waiting;
    // The other pool got a slot only once the cut-off one had given its resources up.
    expect(counted.peak).toBe(3);
    expect(cutPool.stats().size).toBe(0);
    expect(counted.destroyReasons.filter((reason) => reason === 'budget')).toHaveLength(3);
    expect(cutOff.stats()).toMatchObject({ held: 0, revoked: 3 });
    lease.release();
  });

  test('a stall shorter than the lease, with connections in use: their slots stay counted and go to nobody else', async () => {
    newKey();
    const through = await proxy();
    const counted = new Counted();
    const stalled = budget({ url: via(through), limit: 2, leaseMs: 2_000, renewIntervalMs: 400, redisTimeoutMs: 150 });
    const stalledPool = track(counted.pool(stalled, 2));
    const inUse = await Promise.all([stalledPool.acquire(), stalledPool.acquire()]);
    const other = track(counted.pool(budget({ limit: 2 }), 2));
    let otherGot = false;
    const waiting = other.acquire({ timeoutMs: 20_000 }).then((lease) => {
      otherGot = true;
      return lease;
    });
    through.setMode('stall');
    // Cut off until just before its lease would run out: it gives the slots up (to close as
    // soon as the connections are idle), but they are still in use.
    // Guards (20 s) against a hang, not timing assertions.
    expect(await eventually(() => stalled.stats().revoked === 2, 20_000), 'the stalled budget gives its slots up').toBe(true);
    through.setMode('pass');
    expect(
      await eventually(async () => stalled.stats().available && Object.values(await holders()).includes('2'), 20_000),
      'Redis counts them again',
    ).toBe(true);
    // Time for the other process to poll a few times (it must keep waiting).
    await new Promise((resolve) => setTimeout(resolve, 600));
    expect(otherGot).toBe(false);
    expect(counted.peak).toBe(2);
    // In use until now; given back, they close, and the other process gets a slot.
    for (const lease of inUse) lease.release();
    const lease = await waiting;
    expect(counted.peak).toBe(2);
    expect(counted.destroyReasons).toContain('budget');
    lease.release();
  });

  test('more processes than slots take turns: one waiting with none gets a slot an idle one gives back', async () => {
    newKey();
    const counted = new Counted();
    const options = { limit: 2, renewIntervalMs: 100, leaseMs: 1_000 };
    const [first, second, third] = [1, 2, 3].map(() => track(counted.pool(budget(options), 1))) as [Pool<object>, Pool<object>, Pool<object>];
    (await first.acquire()).release();
    (await second.acquire()).release();
    const lease = await third.acquire({ timeoutMs: 20_000 });
    expect(counted.peak).toBe(2);
    // Each idle holder decides on its own: one or both may give theirs back.
    expect(counted.destroyReasons.length).toBeGreaterThan(0);
    expect(new Set(counted.destroyReasons)).toEqual(new Set(['budget']));
    lease.release();
  });

  test('a slot given back by one process goes to a process waiting below its fair share', async () => {
    newKey();
    const counted = new Counted();
    const greedyBudget = budget({ renewIntervalMs: 50, leaseMs: 1_000 });
    const greedy = track(counted.pool(greedyBudget));
    const leases = await Promise.all([greedy.acquire(), greedy.acquire(), greedy.acquire()]);
    const starved = track(counted.pool(budget()));
    const waiting = starved.acquire({ timeoutMs: 20_000 });
    // The greedy pool wants more too.
    const more = greedy.acquire({ timeoutMs: 20_000 });
    expect(await eventually(() => greedyBudget.stats().contended, 20_000), 'the greedy budget hears of the waiting pool').toBe(true);
    // Above its share (3 of 3, share 1) while another waits below its own: the connection it
    // gives back is destroyed, not handed to its own waiter, and the slot goes to the other.
    leases[0]!.release();
    const got = await waiting;
    expect(counted.peak).toBe(3);
    expect(starved.stats().size).toBe(1);
    expect(counted.destroyReasons).toEqual(['budget']);
    got.release();
    leases[1]!.release();
    leases[2]!.release();
    (await more).release();
  });

  test('one budget serves one pool; options are checked without echoing a URL', () => {
    newKey();
    const shared = budget();
    track(new Counted().pool(shared));
    expect(() => new Counted().pool(shared)).toThrow(InvalidOptionError);
    for (const bad of [
      { url: 'postgres://user:hunter2@host/db' },
      { key: '' },
      { key: 'has space' },
      { limit: 0 },
      { leaseMs: 1_000, renewIntervalMs: 600 },
      { whenUnavailable: { localLimit: 99 } },
    ]) {
      let thrown: unknown;
      try {
        redisConnectionBudget({ url: redisUrl, key: 'k', limit: 3, ...bad } as RedisConnectionBudgetOptions);
      } catch (error) {
        thrown = error;
      }
      expect(thrown, JSON.stringify(bad)).toBeInstanceOf(InvalidOptionError);
      expect(textOf(thrown)).not.toContain('hunter2');
    }
  });

  test('closed, a pool with a budget leaves no socket or timer: the process exits on its own, and Redis counts nothing of it', async () => {
    newKey();
    process.env['BUDGET_KEY'] = key;
    process.env['SLUICE_REDIS_URL'] = redisUrl;
    const outcome = await runNode(['test/fixtures/budget-close-then-exit.ts'], 20_000);
    expect(outcome.stderr).toBe('');
    expect(outcome.signal).toBeNull();
    expect(outcome.code).toBe(0);
    expect(outcome.stdout).toContain('DONE');
    expect(await holders()).toEqual({});
  });
});
