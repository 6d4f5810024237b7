/**
 * Dedicated Redis connections across a stalled network, made for real with the TCP proxy.
 *
 * The driver-level tests put the pooled connection behind the proxy and the control
 * connection straight on the server: that is how they can show, deterministically, what the
 * unblock does when the command's reply is held on the way (it completed on the server: its
 * reply is returned once it arrives) and when it never arrives in time (the connection is
 * killed). In production both go the same way; the last test stalls both, through
 * `connectRedis`. No assertion is about timing.
 */
import { describe, expect, test } from 'vitest';
import { testServerUrl } from 'sluice/testing/vitest';
import { rawRedis, redisScratch } from '../support/redis-scratch.js';
import { RedisControlConnection } from '../../src/drivers/redis/control-connection.js';
import { RedisConnection } from '../../src/drivers/redis/redis-connection.js';
import { connectRedis, type RedisClient } from '../../src/orm/redis-client.js';
import type { SluiceError } from '../../src/errors.js';
import { eventually, outcomeOf, targetOf, viaProxy } from './fault-helpers.js';
import { TcpProxy } from './tcp-proxy.js';

const url = testServerUrl('redis') ?? '';

describe.skipIf(url === '')('Redis connections across a stalled network', () => {
  const { admin, key, cleanups } = redisScratch(url, 'sluice-redis-faults');
  let proxy: TcpProxy;

  async function startProxy(): Promise<TcpProxy> {
    const { host, port } = targetOf(url, 6379);
    proxy = await TcpProxy.start(host, port);
    cleanups.push(() => proxy.close());
    return proxy;
  }

  /** A RedisConnection through the proxy, whose control connection goes straight to the server. */
  async function proxiedConnection(cancelGraceMs: number): Promise<RedisConnection> {
    const redis = rawRedis(viaProxy(url, proxy));
    await redis.connect();
    const id = Number(await redis.call('CLIENT', ['ID']));
    const control = new RedisControlConnection(() => rawRedis(url));
    const connection = new RedisConnection(redis, id, control, cancelGraceMs);
    cleanups.push(async () => {
      await connection.close();
      await control.close(1_000);
    });
    return connection;
  }

  async function serverFlags(id: number): Promise<string | undefined> {
    const line = String(await admin.call('CLIENT', 'LIST', 'ID', String(id))).trim();
    return line === '' ? undefined : (/(?:^| )flags=(\S*)/.exec(line)?.[1] ?? '');
  }
  const isBlocked = async (id: number): Promise<boolean> => (await serverFlags(id))?.includes('b') === true;

  test('BLPOP served on the server while its reply is held on the way: the abort resolves with the element once it arrives', async () => {
    await startProxy();
    const connection = await proxiedConnection(30_000);
    const list = key('list');
    const controller = new AbortController();
    const popping = outcomeOf(connection.send('BLPOP', [list, 0], { signal: controller.signal }));
    expect(await eventually(() => isBlocked(connection.clientId))).toBe(true);
    proxy.setMode('stall');
    await admin.rpush(list, 'precious');
    // The server has handed the element to the blocked client: the reply is in the proxy.
    expect(await eventually(async () => !(await isBlocked(connection.clientId)))).toBe(true);
    expect(await admin.llen(list)).toBe(0);
    controller.abort(new Error('gave up'));
    // CLIENT UNBLOCK (straight to the server) finds nothing blocked; the reply is still awaited.
    await new Promise((resolve) => setTimeout(resolve, 100));
    proxy.setMode('pass');
    expect(await popping).toEqual({ ok: true, value: [list, 'precious'] });
    expect(connection.broken).toBe(false);
    expect(await connection.send('PING')).toBe('PONG');
  });

  test('BLPOP served while its UNBLOCK is held, then the connection killed: the element already received is returned', async () => {
    await startProxy();
    // The other way round: the pooled connection straight to the server, the control one stalled.
    const redis = rawRedis(url);
    await redis.connect();
    const id = Number(await redis.call('CLIENT', ['ID']));
    const control = new RedisControlConnection(() => rawRedis(viaProxy(url, proxy)));
    const connection = new RedisConnection(redis, id, control, 30_000);
    cleanups.push(async () => {
      await connection.close();
      await control.close(1_000);
    });
    const list = key('list');
    const controller = new AbortController();
    const popping = outcomeOf(connection.send('BLPOP', [list, 0], { signal: controller.signal }));
    expect(await eventually(() => isBlocked(id))).toBe(true);
    proxy.setMode('stall');
    controller.abort(new Error('gave up'));
    await admin.rpush(list, 'precious');
    expect(await eventually(async () => (await admin.llen(list)) === 0 && !(await isBlocked(id)))).toBe(true);
    // The reply is on the client's side; then the server closes the connection.
    await admin.call('CLIENT', 'KILL', 'ID', String(id));
    expect(await eventually(() => connection.broken)).toBe(true);
    // The UNBLOCK can no longer be delivered: the cancel ends now.
    await proxy.close();
    expect(await popping).toEqual({ ok: true, value: [list, 'precious'] });
  });

  test('an unblocked command whose reply does not come back within the grace: the connection is killed, the call rejects with the reason', async () => {
    await startProxy();
    const connection = await proxiedConnection(300);
    const id = connection.clientId;
    const controller = new AbortController();
    const reason = new Error('deadline');
    const popping = outcomeOf(connection.send('BLPOP', [key('list'), 0], { signal: controller.signal }));
    expect(await eventually(() => isBlocked(id))).toBe(true);
    proxy.setMode('stall');
    controller.abort(reason);
    expect(await popping).toEqual({ ok: false, error: reason });
    expect(connection.broken).toBe(true);
    // Gone from the server: nothing of it stays blocked or connected there.
    expect(await eventually(async () => (await serverFlags(id)) === undefined)).toBe(true);
    await expect(connection.send('PING')).rejects.toMatchObject({ code: 'CONNECTION_LOST' });
  });

  test('connectRedis with everything stalled: QUERY_TIMEOUT after the grace, the connection replaced, and once the network is back the old client is gone', async () => {
    await startProxy();
    const client: RedisClient = connectRedis(viaProxy(url, proxy), { pool: { max: 1 }, cancelGraceMs: 300 });
    cleanups.push(() => client.close());
    const destroyed: unknown[] = [];
    client.pool.on('destroy', (event) => destroyed.push(event.reason));
    const id = await client.withConnection(async (session) => session.clientId);
    const popping = outcomeOf(client.blpop([key('list')], 0, { timeoutMs: 500 }));
    expect(await eventually(() => isBlocked(id))).toBe(true);
    proxy.setMode('stall');
    const outcome = await popping;
    expect((outcome as { error: SluiceError }).error.code).toBe('QUERY_TIMEOUT');
    expect(destroyed).toHaveLength(1);
    proxy.setMode('pass');
    const next = await client.withConnection(async (session) => session.clientId);
    expect(next).not.toBe(id);
    // Killed by the retried CLIENT KILL, or let go when its socket closed: gone either way.
    expect(await eventually(async () => (await serverFlags(id)) === undefined, 10_000)).toBe(true);
  });
});
