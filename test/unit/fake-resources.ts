import { afterEach, vi } from 'vitest';
import { createPool, type CreateContext, type Pool, type PoolOptions } from '../../src/index.js';

/** A stand-in resource: the pool only needs identity. */
export interface FakeResource {
  readonly id: number;
}

/**
 * A resource factory that records what the pool does with it: how many were created,
 * which were destroyed and how often, and lets a test make creates fail or hang.
 */
export class FakeFactory {
  readonly created: FakeResource[] = [];
  readonly destroyed = new Map<number, number>();
  /** Errors thrown by the next create calls, in order. */
  readonly failures: unknown[] = [];
  /** Concurrent create calls in flight right now, and the most ever seen. */
  inFlight = 0;
  peakInFlight = 0;
  calls = 0;
  /** When set, creates wait for `release()` before finishing. */
  gate: Promise<void> | undefined;
  #openGate: (() => void) | undefined;

  readonly create = async ({ signal }: CreateContext): Promise<FakeResource> => {
    this.calls++;
    this.inFlight++;
    this.peakInFlight = Math.max(this.peakInFlight, this.inFlight);
    try {
      if (this.gate !== undefined) {
        const gate = this.gate;
        await new Promise<void>((resolve, reject) => {
          void gate.then(resolve);
          signal.addEventListener('abort', () => reject(signal.reason), { once: true });
        });
      } else {
        await Promise.resolve();
      }
      if (this.failures.length > 0) throw this.failures.shift();
      const resource = { id: this.created.length + 1 };
      this.created.push(resource);
      return resource;
    } finally {
      this.inFlight--;
    }
  };

  readonly destroy = (resource: FakeResource): void => {
    this.destroyed.set(resource.id, (this.destroyed.get(resource.id) ?? 0) + 1);
  };

  /** Makes creates wait until `openGate()`. */
  closeGate(): void {
    this.gate = new Promise<void>((resolve) => {
      this.#openGate = resolve;
    });
  }

  openGate(): void {
    this.#openGate?.();
    this.gate = undefined;
  }

  /** Pool options using this factory. Tests add their own. */
  options(extra: Partial<PoolOptions<FakeResource>> & { max: number }): PoolOptions<FakeResource> {
    return { create: this.create, destroy: this.destroy, ...extra };
  }

  /** Resources destroyed a number of times other than once. */
  notDestroyedExactlyOnce(): number[] {
    return this.created.filter((resource) => this.destroyed.get(resource.id) !== 1).map((resource) => resource.id);
  }
}

/** Lets every pending promise callback run (a few macrotask turns). */
export async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

/** Observes a promise without awaiting it, so a test can check whether it settled yet. */
export function track<T>(promise: Promise<T>): {
  readonly promise: Promise<T>;
  readonly state: () => 'pending' | 'fulfilled' | 'rejected';
  readonly value: () => T | undefined;
  readonly error: () => unknown;
} {
  let state: 'pending' | 'fulfilled' | 'rejected' = 'pending';
  let value: T | undefined;
  let error: unknown;
  promise.then(
    (v) => {
      state = 'fulfilled';
      value = v;
    },
    (e: unknown) => {
      state = 'rejected';
      error = e;
    },
  );
  return { promise, state: () => state, value: () => value, error: () => error };
}

/**
 * Pools made in a test file are closed after each test (with real timers back), so a
 * failing test cannot leave timers or resources behind for the next one.
 */
export function poolsClosedAfterEach(): {
  /** A pool over `factory`, closed after the test. */
  readonly makePool: (factory: FakeFactory, extra: Parameters<FakeFactory['options']>[0]) => Pool<FakeResource>;
  /** Closes a pool made some other way after the test; returns it. */
  readonly keep: <P extends Pool<FakeResource>>(pool: P) => P;
} {
  const pools: Array<Pool<FakeResource>> = [];
  afterEach(async () => {
    vi.useRealTimers();
    await Promise.all(pools.splice(0).map((pool) => pool.close()));
  });
  const keep = <P extends Pool<FakeResource>>(pool: P): P => {
    pools.push(pool);
    return pool;
  };
  return { makePool: (factory, extra) => keep(createPool(factory.options(extra))), keep };
}
