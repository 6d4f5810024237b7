/**
 * Redis transactions (connectRedis `transaction`, `RedisConnection.multiExec`) against a real
 * Redis: MULTI, the queued commands and EXEC go out in one round trip, with the error mapping,
 * the MULTI/WATCH bookkeeping and the abort semantics of single commands.
 *
 * One round trip is shown with a reply gate: a proxy that passes requests at once but holds
 * every reply until released. With replies held, the server still applies the whole block,
 * which it could not if the client waited for MULTI's reply before sending the rest.
 * No assertion is about timing.
 */
import { connect, createServer, type Server, type Socket } from 'node:net';
import { describe, expect, test } from 'vitest';
import { testServerUrl } from 'sluice/testing/vitest';
import { rawRedis, redisScratch } from '../support/redis-scratch.js';
import { RedisControlConnection } from '../../src/drivers/redis/control-connection.js';
import { RedisConnection } from '../../src/drivers/redis/redis-connection.js';
import { RedisCommandError } from '../../src/drivers/redis/redis-errors.js';
import type { SluiceError } from '../../src/errors.js';
import { connectRedis, type RedisClient } from '../../src/orm/redis-client.js';
import { eventually, outcomeOf, targetOf, viaProxy } from './fault-helpers.js';
import { TcpProxy } from './tcp-proxy.js';

const url = testServerUrl('redis') ?? '';

/**
 * Forwards TCP to the server; client-to-server bytes always flow, server-to-client bytes are
 * held while `holding` and delivered, in order, on `release()`.
 */
class ReplyGate {
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();
  readonly #held: Array<() => void> = [];
  #holding = false;

  private constructor(server: Server) {
    this.#server = server;
  }

  static async start(host: string, port: number): Promise<ReplyGate> {
    const server = createServer();
    const gate = new ReplyGate(server);
    server.on('connection', (client) => gate.#link(client, connect({ host, port })));
    await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port: 0 }, resolve));
    return gate;
  }

  get port(): number {
    return (this.#server.address() as { port: number }).port;
  }

  hold(): void {
    this.#holding = true;
  }

  release(): void {
    this.#holding = false;
    for (const deliver of this.#held.splice(0)) deliver();
  }

  close(): Promise<void> {
    for (const socket of this.#sockets) socket.destroy();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }

  #link(client: Socket, upstream: Socket): void {
    for (const socket of [client, upstream]) {
      this.#sockets.add(socket);
      socket.on('error', () => {});
      socket.on('close', () => {
        this.#sockets.delete(socket);
        client.destroy();
        upstream.destroy();
      });
    }
    client.on('data', (chunk: Buffer) => upstream.write(chunk));
    upstream.on('data', (chunk: Buffer) => {
      const deliver = (): void => void client.write(chunk);
      if (this.#holding) this.#held.push(deliver);
      else deliver();
    });
  }
}

describe.skipIf(url === '')('Redis transactions: MULTI..EXEC in one round trip', () => {
  const { admin, key, cleanups } = redisScratch(url, 'sluice-redis-tx');

  /** One connection, never validated on checkout (a PING would wait behind held replies). */
  function open(target = url, options: Parameters<typeof connectRedis>[1] = {}): RedisClient {
    const client = connectRedis(target, { pool: { max: 1, validateAfterIdleMs: 3_600_000 }, ...options });
    cleanups.push(() => client.close());
    return client;
  }

  async function startGate(): Promise<{ gate: ReplyGate; gateUrl: string }> {
    const { host, port } = targetOf(url, 6379);
    const gate = await ReplyGate.start(host, port);
    cleanups.push(() => gate.close());
    const parsed = new URL(url);
    parsed.hostname = '127.0.0.1';
    parsed.port = String(gate.port);
    return { gate, gateUrl: parsed.toString() };
  }

  async function serverClient(id: number): Promise<string | undefined> {
    const line = String(await admin.call('CLIENT', 'LIST', 'ID', String(id))).trim();
    return line === '' ? undefined : line;
  }

  /** Whether `promise` has settled, checked after the pending callbacks have run. */
  async function isSettled(promise: Promise<unknown>): Promise<boolean> {
    let settled = false;
    void promise.then(
      () => (settled = true),
      () => (settled = true),
    );
    await new Promise((resolve) => setImmediate(resolve));
    return settled;
  }

  test('the whole block reaches the server and is applied while no reply has come back: one round trip', async () => {
    const { gate, gateUrl } = await startGate();
    const client = open(gateUrl);
    const id = await client.withConnection(async (session) => session.clientId);
    const [a, b, list] = [key('a'), key('b'), key('list')];
    gate.hold();
    const committing = client.transaction(
      async () => [
        { name: 'SET', args: [a, 'x'] },
        { name: 'INCR', args: [b] },
        { name: 'RPUSH', args: [list, 'one', 'two'] },
      ],
      { watch: [] },
    );
    // Applied on the server, all of it, with every reply still held at the gate.
    expect(await eventually(async () => (await admin.exists(a, b, list)) === 3)).toBe(true);
    expect(await isSettled(committing)).toBe(false);
    expect(await serverClient(id)).toMatch(/ cmd=exec /);
    gate.release();
    expect(await committing).toEqual(['OK', 1, 2]);
    // Given back clean and kept: the same connection serves the next call.
    expect(await client.withConnection(async (session) => [session.clientId, await session.command('GET', [a])])).toEqual([id, 'x']);
    expect(client.pool.stats().totals.created).toBe(1);
  });

  test('WATCH, a read, then the block: commits; a conflict is retried, then TRANSACTION_CONFLICT', async () => {
    const client = open();
    const counterKey = key('counter');
    await admin.set(counterKey, '10');
    let attempts = 0;
    const replies = await client.transaction(
      async (session) => {
        attempts++;
        const value = Number(await session.command<string>('GET', [counterKey]));
        if (attempts === 1) await admin.incr(counterKey); // someone else, between WATCH and EXEC
        return [
          { name: 'SET', args: [counterKey, value * 2] },
          { name: 'GET', args: [counterKey] },
        ];
      },
      { watch: [counterKey], retries: 1 },
    );
    expect(attempts).toBe(2);
    expect(replies).toEqual(['OK', '22']);
    const exhausted = await outcomeOf(
      client.transaction(
        async () => {
          await admin.incr(counterKey);
          return [{ name: 'SET', args: [counterKey, 'never'] }];
        },
        { watch: [counterKey], retries: 2 },
      ),
    );
    expect((exhausted as { error: SluiceError }).error).toMatchObject({ code: 'TRANSACTION_CONFLICT', attempts: 3 });
    expect(await admin.get(counterKey)).toBe('25');
  });

  test('a command refused while queued (wrong arity): a RedisCommandError naming it, nothing applied, the connection clean', async () => {
    const client = open();
    const [before, after, watched] = [key('before'), key('after'), key('watched')];
    const failed = await outcomeOf(
      client.transaction(
        async () => [
          { name: 'SET', args: [before, '1'] },
          { name: 'incr', args: [] },
          { name: 'SET', args: [after, '1'] },
        ],
        { watch: [watched] },
      ),
    );
    const error = (failed as { error: RedisCommandError }).error;
    expect(error).toBeInstanceOf(RedisCommandError);
    expect(error).toMatchObject({ code: 'REDIS_ERROR', command: 'INCR', redisCode: 'ERR' });
    expect(error.message).toMatch(/INCR/);
    expect(await admin.exists(before, after)).toBe(0);
    // EXECABORT ended the MULTI and the WATCH: a change to the key watched before does not
    // abort the next user's transaction, and its commands run rather than queue up.
    await admin.set(watched, 'changed');
    const next = await client.withConnection(async (session) => {
      expect(await session.command('SET', [`${before}:x`, 'y'])).toBe('OK');
      await session.command('MULTI');
      await session.command('INCR', [after]);
      return session.command('EXEC');
    });
    expect(next).toEqual([1]);
    expect(client.pool.stats().totals.created).toBe(1);
  });

  test('a command failing inside EXEC (WRONGTYPE) is a RedisCommandError in its slot; the others are applied', async () => {
    const client = open();
    const [text, first, last] = [key('text'), key('first'), key('last')];
    await admin.set(text, 'a string');
    const replies = await client.transaction(
      async () => [
        { name: 'SET', args: [first, '1'] },
        { name: 'LPUSH', args: [text, 'secret-argument'] },
        { name: 'INCR', args: [last] },
      ],
      { watch: [text] },
    );
    expect(replies).toHaveLength(3);
    expect(replies[0]).toBe('OK');
    expect(replies[1]).toBeInstanceOf(RedisCommandError);
    expect(replies[1]).toMatchObject({ code: 'REDIS_ERROR', command: 'LPUSH', redisCode: 'WRONGTYPE' });
    expect((replies[1] as Error).message).not.toContain('secret-argument');
    expect(replies[2]).toBe(1);
    expect(await admin.get(first)).toBe('1');
    expect(await admin.get(text)).toBe('a string');
  });

  test('commands a pooled connection refuses, or Redis does not queue, are refused before anything is sent', async () => {
    const client = open();
    const untouched = key('untouched');
    for (const refused of [
      { name: 'SELECT', args: [1] },
      { name: 'subscribe', args: ['channel'] },
      { name: 'EXEC' },
      { name: 'MULTI' },
      { name: 'DISCARD' },
      { name: 'WATCH', args: [untouched] },
      { name: 'GET ME', args: [] },
    ]) {
      const outcome = await outcomeOf(client.transaction(async () => [{ name: 'SET', args: [untouched, '1'] }, refused], { watch: [] }));
      expect((outcome as { error: SluiceError }).error.code).toBe('INVALID_OPTION');
    }
    expect(await admin.exists(untouched)).toBe(0);
    expect(await client.command('PING')).toBe('PONG');
  });

  test('multiExec on a busy connection -> CONNECTION_BUSY; inside an open MULTI -> refused; reset() discards it', async () => {
    const client = open();
    const lease = await client.pool.acquire();
    const connection = lease.resource;
    try {
      const list = key('list');
      const controller = new AbortController();
      const popping = outcomeOf(connection.send('BLPOP', [list, 0], { signal: controller.signal }));
      await expect(connection.multiExec([{ name: 'SET', args: [key('x'), '1'] }])).rejects.toMatchObject({ code: 'CONNECTION_BUSY' });
      controller.abort(new Error('done'));
      expect((await popping).ok).toBe(false);

      const queued = key('queued');
      await connection.send('MULTI');
      await expect(connection.multiExec([{ name: 'SET', args: [queued, '1'] }])).rejects.toMatchObject({ code: 'INVALID_OPTION' });
      expect(connection.inMulti).toBe(true);
      await connection.reset();
      expect(connection.inMulti).toBe(false);
      expect(await connection.multiExec([{ name: 'SET', args: [queued, '2'] }])).toEqual(['OK']);
      expect(await admin.get(queued)).toBe('2');
      // A WATCH is ended by the block's EXEC.
      await connection.send('WATCH', [queued]);
      expect(connection.watching).toBe(true);
      expect(await connection.multiExec([])).toEqual([]);
      expect(connection.watching).toBe(false);
    } finally {
      lease.release();
    }
  });

  test('aborted while the replies are held, then they arrive within the grace: EXEC applied it, so the call resolves; the connection is kept', async () => {
    const { gate, gateUrl } = await startGate();
    const client = open(gateUrl, { cancelGraceMs: 30_000 });
    const id = await client.withConnection(async (session) => session.clientId);
    const applied = key('applied');
    const controller = new AbortController();
    gate.hold();
    const committing = client.transaction(async () => [{ name: 'INCR', args: [applied] }], { watch: [], signal: controller.signal });
    expect(await eventually(async () => (await admin.get(applied)) === '1')).toBe(true);
    controller.abort(new Error('the request went away'));
    // Nothing to unblock: the block waits for its replies.
    expect(await isSettled(committing)).toBe(false);
    gate.release();
    expect(await committing).toEqual([1]);
    expect(await client.withConnection(async (session) => session.clientId)).toBe(id);
    expect(client.pool.stats().totals.created).toBe(1);
  });

  test('aborted while the network is stalled: rejects with the reason within the grace, the connection killed, and nothing applied once the network is back', async () => {
    const { host, port } = targetOf(url, 6379);
    const proxy = await TcpProxy.start(host, port);
    cleanups.push(() => proxy.close());
    // The connection through the proxy, its control connection straight to the server: the
    // CLIENT KILL lands while the block is held on the way, so it can never be applied.
    const redis = rawRedis(viaProxy(url, proxy));
    await redis.connect();
    const id = Number(await redis.call('CLIENT', ['ID']));
    const control = new RedisControlConnection(() => rawRedis(url));
    const connection = new RedisConnection(redis, id, control, 300);
    cleanups.push(async () => {
      await connection.close();
      await control.close(1_000);
    });
    const never = key('never');
    proxy.setMode('stall');
    const controller = new AbortController();
    const reason = new Error('deadline');
    const committing = outcomeOf(connection.multiExec([{ name: 'SET', args: [never, '1'] }], { signal: controller.signal }));
    controller.abort(reason);
    // Settled with the network still stalled: it waited the grace, not for the replies.
    expect(await committing).toEqual({ ok: false, error: reason });
    expect(connection.broken).toBe(true);
    expect(await eventually(async () => (await serverClient(id)) === undefined)).toBe(true);
    proxy.setMode('pass');
    expect(await eventually(() => proxy.openConnections === 0)).toBe(true);
    expect(await admin.exists(never)).toBe(0);
    await expect(connection.multiExec([{ name: 'PING' }])).rejects.toMatchObject({ code: 'CONNECTION_LOST' });
  });

  test('connectRedis: a transaction past its deadline with the network stalled -> QUERY_TIMEOUT, the connection destroyed, not reused', async () => {
    const { host, port } = targetOf(url, 6379);
    const proxy = await TcpProxy.start(host, port);
    cleanups.push(() => proxy.close());
    const client = open(viaProxy(url, proxy), { cancelGraceMs: 300 });
    const destroyed: unknown[] = [];
    client.pool.on('destroy', (event) => destroyed.push(event.resource));
    const id = await client.withConnection(async (session) => session.clientId);
    proxy.setMode('stall');
    const outcome = await outcomeOf(client.transaction(async () => [{ name: 'INCR', args: [key('n')] }], { watch: [], timeoutMs: 200 }));
    expect((outcome as { error: SluiceError }).error.code).toBe('QUERY_TIMEOUT');
    expect(destroyed).toHaveLength(1);
    expect(client.stats().size).toBe(0);
    proxy.setMode('pass');
    const next = await client.withConnection(async (session) => session.clientId);
    expect(next).not.toBe(id);
    expect(await eventually(async () => (await serverClient(id)) === undefined, 10_000)).toBe(true);
  });
});
