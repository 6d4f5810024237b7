import { describe, expect, test } from 'vitest';
import {
  createPool,
  InvalidOptionError,
  LeaseReleasedError,
  PoolClosedError,
  PoolCreateError,
  PoolQueueFullError,
  PoolTimeoutError,
  SluiceError,
} from '../../src/index.js';

describe('errors', () => {
  test('every pool error is a SluiceError with a stable code and its own name', () => {
    const cases: Array<[SluiceError, string, string]> = [
      [new PoolTimeoutError('exhausted', 5, 'm'), 'POOL_TIMEOUT', 'PoolTimeoutError'],
      [new PoolClosedError(), 'POOL_CLOSED', 'PoolClosedError'],
      [new PoolQueueFullError(3), 'POOL_QUEUE_FULL', 'PoolQueueFullError'],
      [new LeaseReleasedError(), 'LEASE_RELEASED', 'LeaseReleasedError'],
      [new PoolCreateError('m', { cause: new Error('x') }), 'POOL_CREATE_FAILED', 'PoolCreateError'],
      [new InvalidOptionError('max', 'm'), 'INVALID_OPTION', 'InvalidOptionError'],
    ];
    for (const [error, code, name] of cases) {
      expect(error).toBeInstanceOf(SluiceError);
      expect(error).toBeInstanceOf(Error);
      expect(error.code).toBe(code);
      expect(error.name).toBe(name);
      expect(String(error)).toMatch(new RegExp(`^${name}: `));
    }
  });

  test('no secret from a factory error reaches a pool error message', async () => {
    const secret = 'hunter2';
    const leaky = Object.assign(new Error(`could not connect to postgres://app:${secret}@db.internal:5432/orders`), {
      code: 'ECONNREFUSED',
    });
    const transient = createPool({
      max: 1,
      create: () => Promise.reject(leaky),
      destroy: () => {},
      createRetryDelayMs: 1,
    });
    const timeout = (await transient.acquire({ timeoutMs: 20 }).catch((e: unknown) => e)) as PoolTimeoutError;
    expect(timeout.reason).toBe('create-failed');
    expect(timeout.message).not.toContain(secret);
    expect(timeout.message).not.toContain('postgres://');
    expect(timeout.cause).toBe(leaky);
    await transient.close();

    const permanent = createPool({
      max: 1,
      create: () => Promise.reject(Object.assign(leaky, { permanent: true })),
      destroy: () => {},
    });
    const failed = (await permanent.acquire().catch((e: unknown) => e)) as PoolCreateError;
    expect(failed).toBeInstanceOf(PoolCreateError);
    expect(failed.message).not.toContain(secret);
    expect(failed.message).toContain('ECONNREFUSED');
    await permanent.close();
  });
});
