import { SluiceError } from '../errors.js';

/**
 * No server for a backend the tests need: its environment variable is not set (or names a
 * server that does not answer), nothing answers on its usual local port, and no Docker
 * engine answers for testcontainers. The message is the one line the kit prints; `reasons`
 * holds each step's finding.
 */
export class NoTestServerError extends SluiceError {
  readonly backend: string;
  readonly reasons: readonly string[];

  constructor(backend: string, message: string, reasons: readonly string[]) {
    super('NO_TEST_SERVER', message);
    this.backend = backend;
    this.reasons = reasons;
  }
}

/**
 * A test database could not be made: the server refused to create a database (a user
 * without CREATEDB), or a template holds something the kit cannot copy (MySQL views,
 * triggers, routines). The message says what to change; the server's error is the `cause`.
 */
export class TestDatabaseError extends SluiceError {
  constructor(message: string, options?: { readonly cause?: unknown }) {
    super('TEST_DATABASE_FAILED', message, options);
  }
}

/**
 * A test's transaction was not rolled back whole, so what the test wrote may still be in its
 * file's database: MySQL committed it (DDL commits implicitly), or its connection was lost.
 */
export class TestIsolationError extends SluiceError {
  constructor(message: string) {
    super('TEST_NOT_ISOLATED', message);
  }
}
