import { describe, expect, test } from 'vitest';
import { MigrationError, MigrationLockTimeoutError, MigrationsInvalidError, SluiceError } from '../../src/index.js';
import { DatabaseError } from '../../src/drivers/errors.js';

describe('migration errors', () => {
  test('each is a SluiceError with a stable code and its own name, exported from sluice', () => {
    const cases: Array<[SluiceError, string, string]> = [
      [new MigrationError('001_a', 'up', [], new Error('x')), 'MIGRATION_FAILED', 'MigrationError'],
      [new MigrationLockTimeoutError(1_000), 'MIGRATION_LOCK_TIMEOUT', 'MigrationLockTimeoutError'],
      [new MigrationsInvalidError('m', undefined), 'MIGRATIONS_INVALID', 'MigrationsInvalidError'],
    ];
    for (const [error, code, name] of cases) {
      expect(error).toBeInstanceOf(SluiceError);
      expect(error.code).toBe(code);
      expect(String(error)).toMatch(new RegExp(`^${name}: `));
    }
  });

  test('MIGRATION_FAILED names the migration; a database cause is quoted, any other only named (it could hold a secret)', () => {
    const fromDatabase = new MigrationError('002_b', 'down', [], new DatabaseError('QUERY_FAILED', 'relation "x" does not exist', { cause: undefined }));
    expect(fromDatabase.message).toBe('Migration 002_b failed (down): QUERY_FAILED: relation "x" does not exist');
    const leaky = new TypeError('cannot reach postgres://app:hunter2@db/orders');
    const fromUser = new MigrationError('003_c', 'up', [], leaky);
    expect(fromUser.message).toBe('Migration 003_c failed (up): TypeError');
    expect(fromUser.cause).toBe(leaky);
  });
});
