import { describe, expect, test } from 'vitest';
import { ConnectionError, DatabaseError, ForeignKeyViolationError, SerializationFailureError, UniqueViolationError } from '../../src/index.js';
import { translateSqliteError } from '../../src/drivers/sqlite/sqlite-errors.js';
import { statementKind } from '../../src/drivers/sqlite/statement-kind.js';
import { WriterLock } from '../../src/drivers/sqlite/writer-lock.js';

describe('SQLite statement kinds (what needs the write lock)', () => {
  test.each([
    ['SELECT 1', 'read'],
    ['  -- note\n /* more */ select * from t', 'read'],
    ['VALUES (1), (2)', 'read'],
    ['EXPLAIN QUERY PLAN SELECT 1', 'read'],
    ['WITH a AS (SELECT updated_at FROM t) SELECT * FROM a', 'read'],
    ['WITH a AS (SELECT 1) INSERT INTO t SELECT * FROM a', 'write'],
    ['PRAGMA table_info(person)', 'read'],
    ['PRAGMA main.journal_mode', 'read'],
    ['PRAGMA user_version = 3', 'write'],
    ['PRAGMA cache_size(100)', 'write'],
    ['PRAGMA wal_checkpoint', 'write'],
    ['SELECT 1; DELETE FROM t', 'write'],
    ['SELECT 1;', 'read'],
    ['INSERT INTO t VALUES (1) RETURNING id', 'write'],
    ['UPDATE t SET n = 1', 'write'],
    ['CREATE TABLE t (n)', 'write'],
    ['BEGIN IMMEDIATE', 'begin'],
    ['SAVEPOINT sluice_savepoint_1', 'begin'],
    ['COMMIT', 'end'],
    ['END TRANSACTION', 'end'],
    ['ROLLBACK', 'end'],
    ['rollback transaction;', 'end'],
    ['ROLLBACK TO SAVEPOINT sluice_savepoint_1', 'write'],
    ['RELEASE SAVEPOINT sluice_savepoint_1', 'write'],
    // A script that may leave a transaction open pins its worker like a BEGIN.
    ['INSERT INTO t VALUES (1); BEGIN', 'begin'],
    ['CREATE TABLE a (n); /* x */ savepoint s; INSERT INTO a VALUES (1)', 'begin'],
    ['CREATE TABLE a (n); INSERT INTO a VALUES (1)', 'write'],
  ] as const)('%s -> %s', (sql, kind) => {
    expect(statementKind(sql)).toBe(kind);
  });
});

describe('WriterLock', () => {
  test('hands the lock on first come, first served, never free in between', async () => {
    const lock = new WriterLock();
    expect(lock.tryAcquire()).toBe(true);
    const order: number[] = [];
    const waiters = [1, 2, 3].map((n) => lock.acquire(undefined, Infinity, () => new Error('timeout')).then(() => order.push(n)));
    expect(lock.waiting).toBe(3);
    lock.release();
    expect(lock.tryAcquire()).toBe(false); // handed to waiter 1, not free
    await waiters[0];
    lock.release();
    await waiters[1];
    lock.release();
    await waiters[2];
    lock.release();
    expect(order).toEqual([1, 2, 3]);
    expect(lock.held).toBe(false);
  });

  test('an abort or a timeout leaves the queue at once and never gets the lock', async () => {
    const lock = new WriterLock();
    lock.tryAcquire();
    const controller = new AbortController();
    const aborted = lock.acquire(controller.signal, Infinity, () => new Error('timeout'));
    const timedOut = lock.acquire(undefined, 10, () => new Error('busy'));
    const third = lock.acquire(undefined, Infinity, () => new Error('timeout'));
    controller.abort(new Error('gave up'));
    await expect(aborted).rejects.toThrow('gave up');
    await expect(timedOut).rejects.toThrow('busy');
    expect(lock.waiting).toBe(1);
    lock.release();
    await third;
    expect(lock.held).toBe(true);
  });
});

describe('WriterLock, shared and exclusive', () => {
  const never = (): Error => new Error('timeout');

  test('autocommit writers of one owner share it; a transaction waits for them, and later writers wait behind it', async () => {
    const lock = new WriterLock();
    const owner = {};
    const order: string[] = [];
    await lock.acquireShared(owner, undefined, Infinity, never);
    await lock.acquireShared(owner, undefined, Infinity, never); // shared: granted at once
    const transaction = lock.acquire(undefined, Infinity, never).then(() => order.push('transaction'));
    const later = lock.acquireShared(owner, undefined, Infinity, never).then(() => order.push('later write'));
    expect(lock.waiting).toBe(2);
    lock.releaseShared();
    await Promise.resolve();
    expect(order).toEqual([]); // one shared hold left
    lock.releaseShared();
    await transaction;
    expect(order).toEqual(['transaction']);
    expect(lock.waiting).toBe(1); // the later write waits for the transaction's end (FIFO)
    lock.release();
    await later;
    expect(order).toEqual(['transaction', 'later write']);
    lock.releaseShared();
    expect(lock.held).toBe(false);
  });

  test('shared holders of different owners (two drivers, two writer workers) exclude each other', async () => {
    const lock = new WriterLock();
    const [first, second] = [{}, {}];
    await lock.acquireShared(first, undefined, Infinity, never);
    let granted = false;
    const other = lock.acquireShared(second, undefined, Infinity, never).then(() => (granted = true));
    await Promise.resolve();
    expect(granted).toBe(false);
    lock.releaseShared();
    await other;
    expect(granted).toBe(true);
  });

  test('a waiter that leaves (timeout) lets the compatible ones behind it in', async () => {
    const lock = new WriterLock();
    const owner = {};
    await lock.acquireShared(owner, undefined, Infinity, never);
    const transaction = lock.acquire(undefined, 10, () => new Error('busy'));
    const write = lock.acquireShared(owner, undefined, Infinity, never);
    await expect(transaction).rejects.toThrow('busy');
    await write; // granted once the exclusive waiter ahead of it gave up
    expect(lock.waiting).toBe(0);
  });
});

describe('SQLite error translation', () => {
  const at = (code: string | undefined, name = 'SqliteError') =>
    translateSqliteError({ name, message: 'boom', ...(code !== undefined ? { code } : {}) }, '/data/app.db');

  test('constraint, busy and other codes', () => {
    expect(at('SQLITE_CONSTRAINT_UNIQUE')).toBeInstanceOf(UniqueViolationError);
    expect(at('SQLITE_CONSTRAINT_PRIMARYKEY')).toBeInstanceOf(UniqueViolationError);
    expect(at('SQLITE_CONSTRAINT_FOREIGNKEY')).toBeInstanceOf(ForeignKeyViolationError);
    expect(at('SQLITE_BUSY_SNAPSHOT')).toBeInstanceOf(SerializationFailureError);
    expect(at('SQLITE_BUSY')).toMatchObject({ code: 'BUSY', retryable: true, driverCode: 'SQLITE_BUSY' });
    expect(at('SQLITE_CONSTRAINT_NOTNULL')).toMatchObject({ code: 'QUERY_FAILED', driverCode: 'SQLITE_CONSTRAINT_NOTNULL' });
    expect(at(undefined, 'RangeError')).toBeInstanceOf(DatabaseError);
  });

  test('errors from opening fail the connect: permanently, unless the file was only locked', () => {
    const cannotOpen = at('SQLITE_CANTOPEN', 'SqliteOpenError');
    expect(cannotOpen).toBeInstanceOf(ConnectionError);
    expect(cannotOpen).toMatchObject({ code: 'CANNOT_OPEN', permanent: true });
    expect(cannotOpen.message).toContain('/data/app.db');
    expect(at('SQLITE_BUSY', 'SqliteOpenError')).toMatchObject({ code: 'CONNECTION_FAILED', permanent: false });
  });
});
