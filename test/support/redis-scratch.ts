import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll } from 'vitest';

/** What `redisScratch` gives a test file. */
export interface RedisScratch {
  /** A plain ioredis client outside the code under test (RESP2): pushes, CLIENT LIST, CLIENT KILL. */
  readonly admin: Redis;
  /** A fresh key under the file's own prefix: `key('jobs')`. */
  readonly key: (name: string) => string;
  /** Run (last first) after each test: clients and proxies the test opened. */
  readonly cleanups: Array<() => Promise<unknown> | void>;
}

/**
 * A Redis test file's scratch space, for use inside its `describe`: an admin client, keys
 * under a prefix of the file's own (no two files or runs share one; nothing is flushed), the
 * test's cleanups run after each test, and every key made deleted after the file.
 */
export function redisScratch(url: string, label: string): RedisScratch {
  const admin = new Redis(url, { lazyConnect: true, protocol: 2, maxRetriesPerRequest: 0 });
  const prefix = `${label}:${process.pid}:${Math.random().toString(36).slice(2)}:`;
  const cleanups: Array<() => Promise<unknown> | void> = [];
  let counter = 0;

  beforeAll(async () => {
    await admin.connect();
  });
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });
  afterAll(async () => {
    const keys = await admin.keys(`${prefix}*`);
    if (keys.length > 0) await admin.del(...keys);
    await admin.quit();
  });
  return { admin, key: (name) => `${prefix}${name}:${++counter}`, cleanups };
}

/** An ioredis connection set up as sluice's Redis driver sets its own up (RESP2, no retries, no queue). */
export function rawRedis(target: string): Redis {
  const parsed = new URL(target);
  const redis = new Redis({
    host: parsed.hostname,
    port: Number(parsed.port || 6379),
    protocol: 2,
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    enableReadyCheck: false,
    disableClientInfo: true,
    maintNotifications: 'disabled',
  });
  redis.on('error', () => {});
  return redis;
}
