import { describe, expect, test } from 'vitest';
import { type BudgetSlot, type ConnectionBudget, createPool, InvalidOptionError, PoolTimeoutError } from '../../src/index.js';
import { FakeFactory, poolsClosedAfterEach, settle, track } from './fake-resources.js';

const { makePool } = poolsClosedAfterEach();

/**
 * A budget kept in memory, to check the pool's side of the contract (the Redis budget has
 * its own tests against a real server). Slots are granted in order while fewer than `limit`
 * are held; `wanted` marks slots the budget asks back.
 */
class MemoryBudget implements ConnectionBudget {
  readonly description = 'the test budget';
  readonly events: string[] = [];
  held = 0;
  peak = 0;
  readonly wanted = new Set<BudgetSlot>();
  /** Slots in the order granted: with creates in order, the slot of resource id N is granted[N - 1]. */
  readonly granted: BudgetSlot[] = [];
  closed = 0;
  failNext: unknown[] = [];
  recheck: (() => void) | undefined;
  readonly #queue: Array<{ readonly grant: () => void }> = [];
  #nextId = 1;

  constructor(public limit: number) {}

  take(signal: AbortSignal): Promise<BudgetSlot> {
    if (this.failNext.length > 0) return Promise.reject(this.failNext.shift());
    return new Promise((resolve, reject) => {
      const entry = {
        grant: () => {
          signal.removeEventListener('abort', onAbort);
          this.held++;
          this.peak = Math.max(this.peak, this.held);
          const id = this.#nextId++;
          this.events.push(`take ${id}`);
          let released = false;
          const slot: BudgetSlot = {
            release: () => {
              if (released) throw new Error(`slot ${id} released twice`);
              released = true;
              this.held--;
              this.events.push(`release ${id}`);
              this.#grantWhileRoom();
            },
          };
          this.granted.push(slot);
          resolve(slot);
        },
      };
      const onAbort = (): void => {
        this.#queue.splice(this.#queue.indexOf(entry), 1);
        this.events.push('take aborted');
        reject(signal.reason);
      };
      signal.addEventListener('abort', onAbort, { once: true });
      this.#queue.push(entry);
      this.#grantWhileRoom();
    });
  }

  /** Slots the budget must have back even below `min` (a lost lease). */
  readonly revoked = new Set<BudgetSlot>();

  keep(slot: BudgetSlot, required: boolean): boolean {
    if (this.revoked.has(slot)) return false;
    return required || !this.wanted.has(slot);
  }

  attach(recheck: () => void): void {
    this.recheck = recheck;
  }

  async close(): Promise<void> {
    this.closed++;
  }

  get waiting(): number {
    return this.#queue.length;
  }

  #grantWhileRoom(): void {
    while (this.held < this.limit && this.#queue.length > 0) this.#queue.shift()!.grant();
  }
}

describe('a pool with a connection budget', () => {
  test('two pools sharing a budget never hold more resources than its limit together', async () => {
    const budget = new MemoryBudget(3);
    const first = new FakeFactory();
    const second = new FakeFactory();
    let alive = 0;
    let peak = 0;
    const counted = (factory: FakeFactory) => ({
      create: async (context: Parameters<FakeFactory['create']>[0]) => {
        const resource = await factory.create(context);
        peak = Math.max(peak, ++alive);
        return resource;
      },
      destroy: (resource: { readonly id: number }) => {
        alive--;
        factory.destroy(resource);
      },
    });
    // The in-memory budget is shared through two facades: a budget serves one pool.
    const facade = (): ConnectionBudget => ({
      description: budget.description,
      take: (signal) => budget.take(signal),
      keep: (slot, required) => budget.keep(slot, required),
      attach: () => {},
      close: async () => {},
    });
    const pools = [
      createPool({ ...counted(first), max: 5, budget: facade(), idleTimeoutMs: 1 }),
      createPool({ ...counted(second), max: 5, budget: facade(), idleTimeoutMs: 1 }),
    ];
    try {
      await Promise.all(
        pools.flatMap((pool) =>
          Array.from({ length: 8 }, async () => {
            for (let i = 0; i < 5; i++) await pool.use(() => settle());
          }),
        ),
      );
      expect(peak).toBeLessThanOrEqual(3);
      expect(budget.peak).toBe(3);
    } finally {
      await Promise.all(pools.map((pool) => pool.close()));
    }
    // Every slot came back once its resource was destroyed.
    expect(budget.held).toBe(0);
  });

  test('a slot is taken before the create and released only after the destroy has finished', async () => {
    const budget = new MemoryBudget(1);
    const factory = new FakeFactory();
    let finishDestroy: (() => void) | undefined;
    const pool = makePool(factory, {
      max: 2,
      budget,
      // The first destroy waits for the test; later ones (at close) finish at once.
      destroy: (resource) =>
        factory.destroyed.size > 0 || finishDestroy !== undefined
          ? factory.destroy(resource)
          : new Promise<void>((resolve) => {
              finishDestroy = () => {
                factory.destroy(resource);
                resolve();
              };
            }),
    });
    const lease = await pool.acquire();
    expect(budget.events).toEqual(['take 1']);
    const second = track(pool.acquire({ timeoutMs: 10_000 }));
    await settle();
    // The pool has room (max 2), the budget has none: the create waits for a slot.
    expect(factory.calls).toBe(1);
    expect(pool.stats()).toMatchObject({ size: 1, pendingCreates: 1, waiting: 1 });
    lease.destroy();
    await settle();
    expect(budget.events).toEqual(['take 1']);
    finishDestroy!();
    await settle();
    expect(budget.events).toEqual(['take 1', 'release 1', 'take 2']);
    expect(second.state()).toBe('fulfilled');
    expect(factory.calls).toBe(2);
    (await second.promise).release();
  });

  test('a resource whose slot is wanted elsewhere is destroyed when it comes back, not handed to the next waiter', async () => {
    const budget = new MemoryBudget(1);
    const factory = new FakeFactory();
    const pool = makePool(factory, { max: 3, budget });
    const lease = await pool.acquire();
    const next = track(pool.acquire({ timeoutMs: 10_000 }));
    await settle();
    const [slot] = [...slotsOf(budget, lease)];
    budget.wanted.add(slot!);
    lease.release();
    await settle();
    expect(factory.destroyed.get(lease.resource.id)).toBe(1);
    // The waiter got a new resource, on the slot given back.
    const got = await next.promise;
    expect(got.resource.id).not.toBe(lease.resource.id);
    got.release();
  });

  test('recheck: idle resources whose slots are asked back are destroyed; min ones stay', async () => {
    const budget = new MemoryBudget(5);
    const factory = new FakeFactory();
    const pool = makePool(factory, { max: 5, min: 1, budget });
    const leases = await Promise.all([pool.acquire(), pool.acquire(), pool.acquire()]);
    for (const lease of leases) lease.release();
    await settle();
    expect(pool.stats()).toMatchObject({ size: 3, idle: 3 });
    for (const lease of leases) for (const slot of slotsOf(budget, lease)) budget.wanted.add(slot);
    budget.recheck!();
    await settle();
    expect(pool.stats()).toMatchObject({ size: 1, idle: 1 });
    expect(budget.held).toBe(1);
  });

  test('a slot the budget lost is given back even below min: its resource must not stay open uncounted', async () => {
    const budget = new MemoryBudget(2);
    const factory = new FakeFactory();
    const pool = makePool(factory, { max: 2, min: 2, budget });
    const leases = await Promise.all([pool.acquire(), pool.acquire()]);
    for (const lease of leases) lease.release();
    await settle();
    for (const slot of budget.granted) budget.revoked.add(slot);
    budget.recheck!();
    await settle();
    // Both destroyed, though min is 2; the pool then asks for new slots to get back to min.
    expect(factory.destroyed.size).toBe(2);
    expect(budget.events.filter((event) => event.startsWith('release'))).toHaveLength(2);
  });

  test('close() stops the creates waiting for slots quietly: no create error for them', async () => {
    const budget = new MemoryBudget(0);
    const factory = new FakeFactory();
    const pool = createPool(factory.options({ max: 2, budget }));
    const errors: unknown[] = [];
    pool.on('error', ({ error }) => errors.push(error));
    const waiter = pool.acquire().catch((e: unknown) => e);
    await settle();
    await pool.close();
    expect(await waiter).toMatchObject({ code: 'POOL_CLOSED' });
    expect(errors).toEqual([]);
    expect(pool.stats().totals.createErrors).toBe(0);
  });

  test('a caller that stops waiting stops the wait for a slot made for it', async () => {
    const budget = new MemoryBudget(1);
    const factory = new FakeFactory();
    const pool = makePool(factory, { max: 3, budget });
    const lease = await pool.acquire();
    const controller = new AbortController();
    const waiter = track(pool.acquire({ signal: controller.signal }));
    await settle();
    expect(budget.waiting).toBe(1);
    controller.abort(new Error('gone'));
    await settle();
    expect(waiter.state()).toBe('rejected');
    expect(budget.waiting).toBe(0);
    expect(budget.events).toContain('take aborted');
    expect(pool.stats()).toMatchObject({ pendingCreates: 0, waiting: 0 });
    lease.release();
  });

  test('a caller served by a resource that came back stops the slot wait started for it', async () => {
    const budget = new MemoryBudget(1);
    const factory = new FakeFactory();
    const pool = makePool(factory, { max: 3, budget });
    const lease = await pool.acquire();
    const waiter = track(pool.acquire());
    await settle();
    expect(budget.waiting).toBe(1);
    lease.release();
    await settle();
    expect(waiter.state()).toBe('fulfilled');
    expect(budget.waiting).toBe(0);
    expect(pool.stats()).toMatchObject({ pendingCreates: 0, size: 1 });
    (await waiter.promise).release();
  });

  test("a deadline passed while every create waits for a slot says 'budget'", async () => {
    const budget = new MemoryBudget(1);
    const factory = new FakeFactory();
    const pool = makePool(factory, { max: 3, budget });
    const lease = await pool.acquire();
    const error = await pool.acquire({ timeoutMs: 20 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PoolTimeoutError);
    expect(error).toMatchObject({ code: 'POOL_TIMEOUT', reason: 'budget' });
    expect((error as Error).message).toContain('the test budget');
    lease.release();
  });

  test('a budget that cannot be consulted counts as a failed create: retried, and the cause of the timeout', async () => {
    const budget = new MemoryBudget(2);
    const unavailable = Object.assign(new Error('budget down'), { code: 'BUDGET_UNAVAILABLE' });
    budget.failNext.push(unavailable, unavailable);
    const factory = new FakeFactory();
    const pool = makePool(factory, { max: 2, budget, createRetryDelayMs: 1 });
    const lease = await pool.acquire({ timeoutMs: 5_000 });
    expect(pool.stats().totals.createErrors).toBe(2);
    lease.release();

    budget.failNext.push(...Array.from({ length: 1000 }, () => unavailable));
    const blocked = new MemoryBudget(0);
    blocked.failNext.push(...Array.from({ length: 1000 }, () => unavailable));
    const other = makePool(new FakeFactory(), { max: 2, budget: blocked, createRetryDelayMs: 1 });
    const error = await other.acquire({ timeoutMs: 30 }).catch((e: unknown) => e);
    expect(error).toMatchObject({ reason: 'create-failed', cause: unavailable });
  });

  test('close() closes the budget once, after the resources are destroyed, and every slot is back', async () => {
    const budget = new MemoryBudget(2);
    const factory = new FakeFactory();
    const pool = createPool(factory.options({ max: 2, budget }));
    const lease = await pool.acquire();
    lease.release();
    await pool.close();
    expect(budget.closed).toBe(1);
    expect(budget.held).toBe(0);
    expect(budget.events).toEqual(['take 1', 'release 1']);
  });

  test('a budget is checked, and serves one pool', () => {
    const factory = new FakeFactory();
    expect(() => createPool(factory.options({ max: 1, budget: {} as ConnectionBudget }))).toThrow(InvalidOptionError);
  });
});

/** The slot a lease's resource holds (resources are created in the order slots are granted). */
function slotsOf(budget: MemoryBudget, lease: { readonly resource: { readonly id: number } }): BudgetSlot[] {
  return [budget.granted[lease.resource.id - 1]!];
}
