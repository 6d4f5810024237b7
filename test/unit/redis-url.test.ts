import { describe, expect, test } from 'vitest';
import { RedisCommandError } from '../../src/drivers/redis/redis-errors.js';
import { translateCommandError, translateConnectError } from '../../src/drivers/redis/redis-errors.js';
import { describeRedisTarget, parseRedisUrl } from '../../src/drivers/redis/redis-url.js';

/** An error shaped as ioredis's error replies are (class `ReplyError`, or RESP3's subclass named so). */
function replyError(message: string): Error {
  const error = new Error(message);
  Object.defineProperty(error, 'name', { value: 'ReplyError' });
  return error;
}

describe('redis:// URLs', () => {
  test('host, port, database, credentials (percent-decoded), TLS', () => {
    expect(parseRedisUrl('redis://127.0.0.1')).toEqual({ host: '127.0.0.1', port: 6379, db: 0, username: undefined, password: undefined, tls: false });
    expect(parseRedisUrl('rediss://app:p%40ss@cache.internal:6380/2')).toEqual({
      host: 'cache.internal',
      port: 6380,
      db: 2,
      username: 'app',
      password: 'p@ss',
      tls: true,
    });
    expect(parseRedisUrl('redis://:only-password@[::1]:7000/')).toMatchObject({ host: '::1', port: 7000, db: 0, username: undefined, password: 'only-password' });
  });

  test('location: host, port and database, never the credentials', () => {
    expect(describeRedisTarget(parseRedisUrl('redis://app:secret@10.1.2.3:6379/4'))).toBe('10.1.2.3:6379/4');
    expect(describeRedisTarget(parseRedisUrl('redis://[::1]'))).toBe('[::1]:6379/0');
  });

  test('refused without quoting the URL: other protocols, a query string, a path that is no database number', () => {
    for (const bad of ['http://u:secret@h', 'redis://u:secret@h/?db=1', 'redis://u:secret@h/cache', 'not a url secret', 'redis://u:secret@h/1#x']) {
      expect(() => parseRedisUrl(bad)).toThrow(expect.objectContaining({ code: 'INVALID_OPTION' }));
      try {
        parseRedisUrl(bad);
      } catch (error) {
        expect((error as Error).message).not.toContain('secret');
      }
    }
  });
});

describe('Redis error replies', () => {
  test('reply code, command name, and no arguments quoted back', () => {
    const error = translateCommandError(replyError("ERR unknown command 'FOO', with args beginning with: 'secret' "), 'FOO');
    expect(error).toBeInstanceOf(RedisCommandError);
    expect(error).toMatchObject({ code: 'REDIS_ERROR', redisCode: 'ERR', command: 'FOO' });
    expect(error.message).not.toContain('secret');
    expect(translateCommandError(replyError('NOSCRIPT No matching script.'), 'EVALSHA')).toMatchObject({ redisCode: 'NOSCRIPT' });
  });

  test('anything else during a command is a lost connection', () => {
    expect(translateCommandError(new Error('Connection is closed.'), 'BLPOP')).toMatchObject({ code: 'CONNECTION_LOST' });
  });

  test('connect failures: credentials and databases are permanent, the rest is retried', () => {
    expect(translateConnectError(replyError('WRONGPASS invalid username-password pair or user is disabled.'), 'h:6379/0')).toMatchObject({
      code: 'AUTH_FAILED',
      permanent: true,
    });
    expect(translateConnectError(replyError('NOAUTH Authentication required.'), 'h:6379/0')).toMatchObject({ code: 'AUTH_FAILED' });
    expect(translateConnectError(replyError('ERR DB index is out of range'), 'h:6379/99')).toMatchObject({ code: 'UNKNOWN_DATABASE', permanent: true });
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' });
    expect(translateConnectError(refused, 'h:1/0')).toMatchObject({ code: 'CONNECTION_FAILED', permanent: false, driverCode: 'ECONNREFUSED' });
  });
});
