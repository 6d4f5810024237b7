/**
 * The query cache's identity of a database (connect.ts, cacheIdentity): what its entry keys
 * carry instead of the location. connect() opens nothing before a query: no server needed.
 */
import { afterEach, describe, expect, test } from 'vitest';
import { InvalidOptionError } from '../../src/errors.js';
import { cacheIdentity, connect, type Database } from '../../src/orm/connect.js';

const opened: Array<Database<unknown>> = [];
const identityOf = (url: string): string => {
  const database = connect<unknown>(url);
  opened.push(database);
  return cacheIdentity(database);
};

afterEach(async () => {
  for (const database of opened.splice(0)) await database.close();
});

describe('cacheIdentity', () => {
  test('the same URL is the same identity; the password and the order of the query string do not count', () => {
    const base = identityOf('postgres://app@db.internal:5432/shop?application_name=x&options=-c%20search_path%3Dt1');
    expect(base).toMatch(/^[0-9a-f]{32}$/);
    expect(identityOf('postgres://app:secret@db.internal:5432/shop?options=-c%20search_path%3Dt1&application_name=x')).toBe(base);
    expect(identityOf('mysql://root@127.0.0.1:3306/test')).toBe(identityOf('mysql://root:pw@127.0.0.1:3306/test'));
  });

  test('another user, query string, host, port, database or dialect is another identity', () => {
    const identities = [
      'postgres://app@db.internal:5432/shop?options=-c%20search_path%3Dt1',
      'postgres://tenant@db.internal:5432/shop?options=-c%20search_path%3Dt1',
      'postgres://app@db.internal:5432/shop?options=-c%20search_path%3Dt2',
      'postgres://app@db.internal:5432/shop',
      'postgres://app@db.other:5432/shop',
      'postgres://app@db.internal:5433/shop',
      'postgres://app@db.internal:5432/shop2',
      'mysql://app@db.internal:5432/shop',
    ].map(identityOf);
    expect(new Set(identities).size).toBe(identities.length);
  });

  test('no user, host or database name shows in it; every sqlite::memory: connect() has its own', () => {
    const identity = identityOf('postgres://app:secret@db.internal:5432/shop');
    expect(identity).not.toMatch(/app|secret|internal|shop/);
    expect(identityOf('sqlite::memory:')).not.toBe(identityOf('sqlite::memory:'));
    expect(identityOf('sqlite:/tmp/sluice-identity.db')).toBe(identityOf('sqlite:///tmp/sluice-identity.db'));
    expect(() => cacheIdentity({} as Database<unknown>)).toThrow(InvalidOptionError);
  });
});
