/**
 * Dedicated Redis connections (connectRedis) against a real Redis: blocking commands past
 * their deadline are unblocked on the server and their connection is used again; aborts;
 * MULTI/WATCH; errors; a killed connection; a wrong password. No assertion is about timing.
 */
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, test } from 'vitest';
import { testServerUrl } from 'sluice/testing/vitest';
import { redisScratch } from '../support/redis-scratch.js';
import { ConnectionError, ConnectionLostError, QueryTimeoutError } from '../../src/drivers/errors.js';
import { RedisCommandError, RedisTransactionConflictError } from '../../src/drivers/redis/redis-errors.js';
import { SluiceError } from '../../src/errors.js';
import { withDeadline } from '../../src/orm/deadline-scope.js';
import { connectRedis, type RedisClient } from '../../src/orm/redis-client.js';
import { runNode } from '../support/run-node.js';
import { eventually, outcomeOf } from './fault-helpers.js';

const url = testServerUrl('redis') ?? '';

describe.skipIf(url === '')('dedicated Redis connections (connectRedis)', () => {
  const { admin, key } = redisScratch(url, 'sluice-redis-test');

  const clients: RedisClient[] = [];

  afterAll(async () => {
    await Promise.all(clients.map((client) => client.close()));
  });

  /** A client with one connection, so "the same connection" is checkable. */
  function open(options: Parameters<typeof connectRedis>[1] = {}): RedisClient {
    const client = connectRedis(url, { pool: { max: 1 }, ...options });
    clients.push(client);
    return client;
  }

  /** The server's view of client `id`: its flags (`b` while blocked) and last command; undefined once gone. */
  async function serverClient(id: number): Promise<{ flags: string; cmd: string } | undefined> {
    const line = String(await admin.call('CLIENT', 'LIST', 'ID', String(id))).trim();
    if (line === '') return undefined;
    const field = (name: string): string => new RegExp(`(?:^| )${name}=(\\S*)`).exec(line)?.[1] ?? '';
    return { flags: field('flags'), cmd: field('cmd') };
  }

  const isBlocked = async (id: number): Promise<boolean> => (await serverClient(id))?.flags.includes('b') === true;

  test('BLPOP past its deadline: QUERY_TIMEOUT, unblocked on the server, the same connection serves the next command', async () => {
    const client = open();
    const id = await client.withConnection(async (session) => session.clientId);
    const list = key('list');
    const popping = outcomeOf(client.blpop([list], 0, { timeoutMs: 300 }));
    expect(await eventually(() => isBlocked(id))).toBe(true);
    const outcome = await popping;
    expect(outcome.ok).toBe(false);
    const error = (outcome as { error: unknown }).error;
    expect(error).toBeInstanceOf(QueryTimeoutError);
    expect((error as SluiceError).code).toBe('QUERY_TIMEOUT');
    const after = await serverClient(id);
    expect(after?.flags).not.toContain('b');
    expect(after?.cmd).toBe('blpop');
    // The same connection, back in the pool and usable.
    await admin.rpush(list, 'next');
    expect(await client.withConnection(async (session) => [session.clientId, await session.blpop([list], 0)])).toEqual([
      id,
      [list, 'next'],
    ]);
    expect(client.stats()).toMatchObject({ size: 1, inUse: 0 });
  });

  test('an AbortSignal unblocks BLPOP with its own reason; the connection is kept', async () => {
    const client = open();
    const id = await client.withConnection(async (session) => session.clientId);
    const controller = new AbortController();
    const reason = new Error('the request went away');
    const popping = outcomeOf(client.blpop([key('list')], 0, { signal: controller.signal }));
    expect(await eventually(() => isBlocked(id))).toBe(true);
    controller.abort(reason);
    expect(await popping).toEqual({ ok: false, error: reason });
    expect((await serverClient(id))?.flags).not.toContain('b');
    expect(await client.withConnection(async (session) => [session.clientId, await session.command('PING')])).toEqual([id, 'PONG']);
    expect(client.stats().size).toBe(1);
  });

  test('XREAD BLOCK past its deadline is unblocked too; entries are read as typed shapes', async () => {
    const client = open();
    const id = await client.withConnection(async (session) => session.clientId);
    const stream = key('stream');
    const reading = outcomeOf(client.xreadBlock({ [stream]: '$' }, { blockMs: 0, timeoutMs: 300 }));
    expect(await eventually(() => isBlocked(id))).toBe(true);
    const outcome = await reading;
    expect((outcome as { error: SluiceError }).error.code).toBe('QUERY_TIMEOUT');
    expect((await serverClient(id))?.flags).not.toContain('b');
    const entryId = String(await admin.call('XADD', stream, '*', 'job', '42', 'kind', 'email'));
    const read = await client.xreadBlock({ [stream]: '0' }, { blockMs: 0, count: 10, timeoutMs: 5_000 });
    expect(read).toEqual([{ stream, entries: [{ id: entryId, fields: { job: '42', kind: 'email' } }] }]);
    expect(await client.xreadBlock({ [stream]: entryId }, { blockMs: 10 })).toBeNull();
    expect(await client.withConnection(async (session) => session.clientId)).toBe(id);
  });

  test('an element pushed as the deadline passes is returned to the caller or left in the list, never lost', async () => {
    const client = open();
    let returned = 0;
    let left = 0;
    for (let i = 0; i < 20; i++) {
      const list = key('race');
      const popping = outcomeOf(client.blpop([list], 0, { timeoutMs: 30 }));
      // Pushed around the deadline: before, at, or after it.
      await new Promise((resolve) => setTimeout(resolve, 25 + (i % 10)));
      await admin.rpush(list, `v${i}`);
      const outcome = await popping;
      if (outcome.ok) {
        expect(outcome.value).toEqual([list, `v${i}`]);
        expect(await admin.llen(list)).toBe(0);
        returned++;
      } else {
        expect((outcome.error as SluiceError).code).toBe('QUERY_TIMEOUT');
        expect(await admin.lrange(list, 0, -1)).toEqual([`v${i}`]);
        left++;
      }
    }
    expect(returned + left).toBe(20);
    // Every round used the one connection: none was given up.
    expect(client.stats()).toMatchObject({ size: 1 });
    expect(client.pool.stats().totals.created).toBe(1);
  });

  test('withDeadline: an ambient deadline bounds a blocking command; commandTimeoutMs applies outside any scope', async () => {
    const client = open({ commandTimeoutMs: 200 });
    const inScope = await outcomeOf(withDeadline({ timeoutMs: 250 }, () => client.blpop([key('list')], 0)));
    expect((inScope as { error: QueryTimeoutError }).error.code).toBe('QUERY_TIMEOUT');
    expect((inScope as { error: QueryTimeoutError }).error.timeoutMs).toBe(250);
    const outside = await outcomeOf(client.blpop([key('list')], 0));
    expect((outside as { error: QueryTimeoutError }).error.timeoutMs).toBe(200);
    // A BLPOP timeout shorter than the deadline ends it first: null, no error.
    expect(await withDeadline({ timeoutMs: 5_000 }, () => client.blpop([key('list')], 0.05))).toBeNull();
  });

  test('transaction: WATCH, read, MULTI/EXEC commits', async () => {
    const client = open();
    const stock = key('stock');
    await admin.set(stock, '5');
    const replies = await client.transaction(
      async (session) => {
        const left = Number(await session.command<string>('GET', [stock]));
        return [
          { name: 'SET', args: [stock, left - 1] },
          { name: 'RPUSH', args: [`${stock}:log`, 'sold'] },
        ];
      },
      { watch: [stock] },
    );
    expect(replies).toEqual(['OK', 1]);
    expect(await admin.get(stock)).toBe('4');
  });

  test('transaction: a watched key changed by another client -> TRANSACTION_CONFLICT, or retried', async () => {
    const client = open();
    const counterKey = key('counter');
    await admin.set(counterKey, '0');
    const conflicting = async (session: Parameters<Parameters<RedisClient['transaction']>[0]>[0]) => {
      const value = Number(await session.command<string>('GET', [counterKey]));
      await admin.incr(counterKey); // someone else, between WATCH and EXEC
      return [{ name: 'SET', args: [counterKey, value + 100] }];
    };
    const failed = await outcomeOf(client.transaction(conflicting, { watch: [counterKey] }));
    const error = (failed as { error: RedisTransactionConflictError }).error;
    expect(error).toBeInstanceOf(RedisTransactionConflictError);
    expect(error.code).toBe('TRANSACTION_CONFLICT');
    expect(error.retryable).toBe(true);
    expect(await admin.get(counterKey)).toBe('1');

    let attempts = 0;
    const replies = await client.transaction(
      async (session) => {
        attempts++;
        const value = Number(await session.command<string>('GET', [counterKey]));
        if (attempts < 3) await admin.incr(counterKey);
        return [{ name: 'SET', args: [counterKey, value + 100] }];
      },
      { watch: [counterKey], retries: 2 },
    );
    expect(replies).toEqual(['OK']);
    expect(attempts).toBe(3);
    // 1, +1, +1 by the other client, then +100 by the third attempt.
    expect(await admin.get(counterKey)).toBe('103');
    const exhausted = await outcomeOf(client.transaction(conflicting, { watch: [counterKey], retries: 1 }));
    expect((exhausted as { error: RedisTransactionConflictError }).error.attempts).toBe(2);
  });

  test('a connection given back mid-WATCH or mid-MULTI is clean for the next user', async () => {
    const client = open();
    const watched = key('watched');
    const queued = key('queued');
    // Left in MULTI with a command queued, by a callback that throws.
    const failed = await outcomeOf(
      client.withConnection(async (session) => {
        await session.command('WATCH', [watched]);
        await session.command('MULTI');
        await session.command('SET', [queued, 'never']);
        throw new Error('changed my mind');
      }),
    );
    expect((failed as { error: Error }).error.message).toBe('changed my mind');
    // Left watching only.
    await client.withConnection(async (session) => {
      await session.command('WATCH', [watched]);
    });
    // The next user: not in MULTI (SET answers OK, not QUEUED), nothing watched (a change by
    // someone else does not abort its transaction), and the queued SET never ran.
    const replies = await client.withConnection(async (session) => {
      expect(await session.command('SET', [`${queued}:x`, '1'])).toBe('OK');
      await admin.set(watched, 'changed');
      await session.command('MULTI');
      await session.command('INCR', [`${queued}:n`]);
      return session.command('EXEC');
    });
    expect(replies).toEqual([1]);
    expect(await admin.exists(queued)).toBe(0);
    expect(client.pool.stats().totals.created).toBe(1);
  });

  test('EXEC or DISCARD without MULTI leaves the keys WATCHed: they are unwatched before the next user', async () => {
    const client = open();
    const watched = key('watched');
    const counter = key('counter');
    for (const stray of ['EXEC', 'DISCARD']) {
      const failed = await outcomeOf(
        client.withConnection(async (session) => {
          await session.command('WATCH', [watched]);
          await session.command(stray);
        }),
      );
      expect((failed as { error: RedisCommandError }).error.message).toMatch(/without MULTI/);
      // The next user's transaction is not aborted by a change to a key it never watched.
      const replies = await client.withConnection(async (session) => {
        await admin.set(watched, stray);
        await session.command('MULTI');
        await session.command('INCR', [counter]);
        return session.command('EXEC');
      });
      expect(replies).not.toBeNull();
    }
    expect(await admin.get(counter)).toBe('2');
    expect(client.pool.stats().totals.created).toBe(1);
  });

  test('a command still running when the callback returns is cancelled before the connection goes back; the next user gets it', async () => {
    const client = open();
    const list = key('orphan');
    let id = 0;
    let orphan!: Promise<{ ok: true; value: unknown } | { ok: false; error: unknown }>;
    await client.withConnection(async (session) => {
      id = session.clientId;
      // Not awaited (say, a Promise.race the callback stopped caring about).
      orphan = outcomeOf(session.blpop([list], 0));
      expect(await eventually(() => isBlocked(id))).toBe(true);
    });
    await admin.rpush(list, 'next');
    // The same connection, with nothing left running on it.
    expect(await client.withConnection(async (session) => [session.clientId, await session.blpop([list], 0)])).toEqual([
      id,
      [list, 'next'],
    ]);
    expect(((await orphan) as { error: SluiceError }).error.code).toBe('SESSION_ENDED');
    expect(client.pool.stats().totals.created).toBe(1);
  });

  test('close() with a command blocked and no deadline: the connection is dropped, the command settles, the client is gone from the server', async () => {
    // A long grace: a QUIT queued behind the blocked command would keep the socket that long.
    const client = connectRedis(url, { pool: { max: 1, closeTimeoutMs: 100 }, cancelGraceMs: 60_000 });
    const id = await client.withConnection(async (session) => session.clientId);
    let settled = false;
    const popping = outcomeOf(client.blpop([key('list')], 0)).finally(() => (settled = true));
    expect(await eventually(() => isBlocked(id))).toBe(true);
    await client.close();
    expect(await eventually(() => settled)).toBe(true);
    expect(((await popping) as { error: SluiceError }).error.code).toBe('CONNECTION_LOST');
    expect(await eventually(async () => (await serverClient(id)) === undefined)).toBe(true);
  });

  test('an error reply is a RedisCommandError with redisCode, without the arguments; the connection stays usable', async () => {
    const client = open();
    const text = key('text');
    await admin.set(text, 'a string');
    const failed = await outcomeOf(client.command('LPUSH', [text, 'secret-argument']));
    const error = (failed as { error: RedisCommandError }).error;
    expect(error).toBeInstanceOf(RedisCommandError);
    expect(error.code).toBe('REDIS_ERROR');
    expect(error.redisCode).toBe('WRONGTYPE');
    expect(error.command).toBe('LPUSH');
    expect(error.message).toContain('LPUSH');
    expect(error.message).not.toContain('secret-argument');
    // Redis quotes an unknown command's arguments back: not in sluice's message.
    const unknown = (await outcomeOf(client.command('NOSUCHCOMMAND', ['secret-argument']))) as { error: RedisCommandError };
    expect(unknown.error.redisCode).toBe('ERR');
    expect(unknown.error.message).not.toContain('secret-argument');
    expect(await client.command('PING')).toBe('PONG');
    expect(client.pool.stats().totals.created).toBe(1);
    // Commands that would change the connection for its next user are refused before sending.
    await expect(client.command('SELECT', [1])).rejects.toMatchObject({ code: 'INVALID_OPTION' });
    // CLIENT REPLY OFF would leave every later command waiting for a reply: refused too.
    await expect(client.command('client', ['reply', 'off'])).rejects.toMatchObject({ code: 'INVALID_OPTION' });
    expect(await client.command('PING')).toBe('PONG');
    // A transaction without its watch list is a clear error, not a TypeError.
    const noWatch = {} as Parameters<RedisClient['transaction']>[1];
    await expect(client.transaction(async () => [], noWatch)).rejects.toMatchObject({ code: 'INVALID_OPTION', option: 'watch' });
  });

  test('a connection killed with CLIENT KILL while blocked -> ConnectionLostError, and the pool replaces it', async () => {
    const client = open();
    const destroyed: unknown[] = [];
    client.pool.on('destroy', (event) => destroyed.push(event.resource));
    const id = await client.withConnection(async (session) => session.clientId);
    const popping = outcomeOf(client.blpop([key('list')], 0, { timeoutMs: 10_000 }));
    expect(await eventually(() => isBlocked(id))).toBe(true);
    expect(await admin.call('CLIENT', 'KILL', 'ID', String(id))).toBe(1);
    const outcome = await popping;
    expect((outcome as { error: unknown }).error).toBeInstanceOf(ConnectionLostError);
    expect((outcome as { error: SluiceError }).error.code).toBe('CONNECTION_LOST');
    expect(destroyed).toHaveLength(1);
    const next = await client.withConnection(async (session) => session.clientId);
    expect(next).not.toBe(id);
    expect(client.stats().size).toBe(1);
  });

  test('an idle connection killed on the server is evicted, not a crash', async () => {
    const client = open();
    const id = await client.withConnection(async (session) => session.clientId);
    await admin.call('CLIENT', 'KILL', 'ID', String(id));
    expect(await eventually(() => client.stats().size === 0)).toBe(true);
    expect(await client.command('PING')).toBe('PONG');
  });

  test('a wrong password -> AUTH_FAILED at once, the password in no message or stack of the error chain', async () => {
    const parsed = new URL(url);
    parsed.username = 'nobody';
    parsed.password = 'secret';
    const client = connectRedis(parsed.toString(), { pool: { max: 1, acquireTimeoutMs: 20_000 } });
    clients.push(client);
    expect(client.location).not.toContain('secret');
    expect(client.location).not.toContain('nobody');
    const outcome = await outcomeOf(client.command('PING'));
    const error = (outcome as { error: ConnectionError }).error;
    expect(error).toBeInstanceOf(ConnectionError);
    expect(error.code).toBe('AUTH_FAILED');
    expect(error.permanent).toBe(true);
    for (let link: unknown = error; link !== undefined && link !== null; link = (link as { cause?: unknown }).cause) {
      expect(String((link as Error).message)).not.toContain('secret');
      expect(String((link as Error).stack)).not.toContain('secret');
    }
  });

  test('bad URLs and options are refused at once, without echoing the URL', () => {
    expect(() => connectRedis('redis://user:hunter2@host:6379/notanumber')).toThrow(/database number/);
    expect(() => connectRedis('postgres://user:hunter2@host/db')).toThrow(/unsupported protocol/);
    try {
      connectRedis('redis://user:hunter2@host:6379/?tls=1');
      expect.unreachable();
    } catch (error) {
      expect((error as SluiceError).code).toBe('INVALID_OPTION');
      expect((error as Error).message).not.toContain('hunter2');
    }
    expect(() => connectRedis(url, { tls: {} })).toThrow(/rediss/);
    expect(() => connectRedis(url, { cancelGraceMs: 0 })).toThrow(/cancelGraceMs/);
    expect(connectRedis('redis://:pw@10.0.0.5:6380/3').location).toBe('Redis 10.0.0.5:6380/3');
  });

  test('close() leaves no socket or timer: a process that blocks, times out and closes exits on its own', async () => {
    const fixture = fileURLToPath(new URL('../fixtures/redis-close-then-exit.ts', import.meta.url));
    const { code, signal, stdout, stderr } = await runNode([fixture, url, key('exit')]);
    expect({ code, signal, stderr }).toEqual({ code: 0, signal: null, stderr: '' });
    expect(JSON.parse(stdout.trim())).toEqual({ timedOut: 'QUERY_TIMEOUT', ping: 'PONG', sizeAfter: 0 });
  });
});
