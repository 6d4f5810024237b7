/**
 * A test run: the servers found for it, and a template database per SQL backend with the
 * schema already migrated (once per run, not once per test file). Framework-agnostic:
 * `sluice/testing/vitest` runs it as vitest's global setup; other runners call it from
 * theirs and hand the plan to their workers (it is plain data).
 */
import type { Database } from '../orm/connect.js';
import { migrate, type MigrationSource } from '../orm/migrate/migrate.js';
import { NoTestServerError } from './errors.js';
import { type MysqlTemplate, dropMysqlRun, prepareMysqlTemplate } from './mysql-template.js';
import { newRunId } from './names.js';
import { type PostgresTemplate, dropPostgresRun, preparePostgresTemplate } from './postgres-template.js';
import { findServer, type ResolvedServer, SERVER_DEFAULTS, SERVER_NAMES, type ServerBackend, type ServerSettings } from './servers.js';
import { type SqliteTemplate, dropSqliteRun, prepareSqliteTemplate } from './sqlite-template.js';
import { withDatabase } from './with-database.js';

export type SqlBackend = 'postgres' | 'mysql' | 'sqlite';
export type TestBackend = SqlBackend | 'redis';
export type Template = PostgresTemplate | MysqlTemplate | SqliteTemplate;

/** What the run has for one backend. Plain data: it crosses to the test workers. */
export type BackendPlan =
  | {
      readonly available: true;
      /** Where it is, safe to print. */
      readonly label: string;
      /** The server's URL (may hold a password: never print it); for SQLite, the template file's. */
      readonly url: string;
      /** What each test file's database is made from (SQL backends). */
      readonly template?: Template;
    }
  | { readonly available: false; readonly reason: string };

export interface TestRunPlan {
  readonly runId: string;
  /** True when a backend found nowhere fails the run instead of skipping its tests. */
  readonly failOnMissing: boolean;
  readonly backends: { readonly [B in TestBackend]?: BackendPlan };
}

export interface TestRunOptions<DB = unknown> {
  /** The backends the tests use. Each is found (or reported missing) once per run. */
  readonly backends: readonly TestBackend[];
  /**
   * The schema every test database starts with, applied once per run to each SQL backend's
   * template: a folder, a provider, or one of those per backend.
   */
  readonly migrations?: MigrationSource | ((backend: SqlBackend) => MigrationSource);
  /** Rows every test database starts with: run once per run on each template, after the migrations. */
  readonly seed?: (database: Database<DB>, backend: SqlBackend) => Promise<void>;
  /** Where to look for each server (environment variable, local URL, container image). */
  readonly servers?: { readonly [B in ServerBackend]?: ServerSettings };
  /**
   * Whether a backend found nowhere fails the run (true) or skips its tests with one loud
   * line (false). Default: true when the `CI` environment variable is `true`.
   */
  readonly failOnMissing?: boolean;
  /** Where the kit's lines go. Default: the console (`warn` for a missing backend). */
  readonly log?: (line: string, level: 'info' | 'warn') => void;
}

export interface TestRun {
  readonly plan: TestRunPlan;
  /** Drops the run's databases and stops the containers it started. */
  teardown(): Promise<void>;
}

/**
 * One line for every backend found nowhere: `[sluice/testing] no server for PostgreSQL
 * (SLUICE_PG_URL is not set; nothing usable at 127.0.0.1:5432/test (ECONNREFUSED)), Redis
 * (...); testcontainers: no Docker engine answers. Set ..., ...`.
 */
function summarize(missing: readonly NoTestServerError[], servers: TestRunOptions['servers']): string {
  const containerReasons = new Set(missing.map((error) => error.reasons.find((reason) => reason.startsWith('testcontainers:'))));
  const shared = containerReasons.size === 1 ? [...containerReasons][0] : undefined;
  const parts = missing.map((error) => {
    const reasons = shared === undefined ? error.reasons : error.reasons.filter((reason) => reason !== shared);
    return `${SERVER_NAMES[error.backend as ServerBackend]} (${reasons.join('; ')})`;
  });
  const variables = missing.map((error) => servers?.[error.backend as ServerBackend]?.env ?? SERVER_DEFAULTS[error.backend as ServerBackend].env);
  return (
    `[sluice/testing] no server for ${parts.join(', ')}${shared === undefined ? '' : `; ${shared}`}. ` +
    `Set ${variables.join(' / ')}, start the servers (docker compose up -d), or start a Docker engine.`
  );
}

/** What the search for one backend's server gave: a server, or why there is none (SQLite needs neither). */
interface Found {
  readonly backend: TestBackend;
  readonly server: ResolvedServer | undefined;
  readonly error: NoTestServerError | undefined;
}

const defaultLog = (line: string, level: 'info' | 'warn'): void => (level === 'warn' ? console.warn(line) : console.log(line));

/** Applies the migrations and the seed to a template database, then closes it. */
function prepareWith<DB>(options: TestRunOptions<DB>, backend: SqlBackend): (url: string) => Promise<void> {
  return (url) =>
    withDatabase<void, DB>(url, async (database) => {
      const source = typeof options.migrations === 'function' ? options.migrations(backend) : options.migrations;
      if (source !== undefined) await migrate(database, source);
      await options.seed?.(database, backend);
    });
}

/**
 * Finds every backend's server (testcontainers started once, here), and prepares each SQL
 * backend's template. A backend found nowhere is reported in one line and skipped, or, with
 * `failOnMissing` (CI), fails the run with a `NoTestServerError`.
 */
export async function startTestRun<DB = unknown>(options: TestRunOptions<DB>): Promise<TestRun> {
  const runId = newRunId();
  const log = options.log ?? defaultLog;
  const failOnMissing = options.failOnMissing ?? process.env.CI === 'true';
  const failsBecause = options.failOnMissing === undefined ? 'With CI=true this fails the run.' : 'failOnMissing: this fails the run.';
  const servers: ResolvedServer[] = [];
  const backends: Partial<Record<TestBackend, BackendPlan>> = {};
  const cleanups: Array<() => Promise<void>> = [];
  const teardown = async (): Promise<void> => {
    const errors: unknown[] = [];
    for (const cleanup of [...cleanups].reverse()) await cleanup().catch((error: unknown) => errors.push(error));
    for (const server of servers) await server.stop().catch((error: unknown) => errors.push(error));
    if (errors.length > 0) throw new AggregateError(errors, '[sluice/testing] cleaning up the test run failed');
  };

  try {
    const unique = [...new Set(options.backends)];
    // Servers are looked for together (each probe may wait for a timeout); templates are made one by one.
    const settled = await Promise.allSettled(
      unique.map(async (backend): Promise<Found> => {
        if (backend === 'sqlite') return { backend, server: undefined, error: undefined };
        try {
          const settings = options.servers?.[backend];
          return { backend, server: await findServer(backend, settings === undefined ? {} : { settings }), error: undefined };
        } catch (error) {
          if (error instanceof NoTestServerError) return { backend, server: undefined, error };
          throw error;
        }
      }),
    );
    // Every container started is stopped by the teardown, even when another backend failed.
    for (const outcome of settled) if (outcome.status === 'fulfilled' && outcome.value.server !== undefined) servers.push(outcome.value.server);
    const failure = settled.find((outcome): outcome is PromiseRejectedResult => outcome.status === 'rejected');
    if (failure !== undefined) throw failure.reason;
    const found = settled.map((outcome) => (outcome as PromiseFulfilledResult<Found>).value);
    const missing = found.flatMap(({ error }) => (error === undefined ? [] : [error]));
    if (missing.length > 0) {
      const summary = summarize(missing, options.servers);
      if (failOnMissing) throw new NoTestServerError(missing.map((error) => error.backend).join(','), `${summary} ${failsBecause}`, missing.flatMap((error) => error.reasons));
      log(`${summary} Their tests are SKIPPED (with CI=true they fail the run).`, 'warn');
      for (const error of missing) backends[error.backend as ServerBackend] = { available: false, reason: error.message };
    }

    for (const { backend, server } of found) {
      if (backend === 'sqlite') {
        const template = await prepareSqliteTemplate(runId, prepareWith(options, 'sqlite'));
        cleanups.push(() => dropSqliteRun(template.directory));
        backends.sqlite = { available: true, label: 'SQLite (a file per test file)', url: `sqlite:${template.path}`, template };
        log('[sluice/testing] SQLite: a copy of the migrated template file per test file', 'info');
        continue;
      }
      if (server === undefined) continue;
      log(`[sluice/testing] ${server.label}`, 'info');
      if (backend === 'redis') {
        backends.redis = { available: true, label: server.label, url: server.url };
        continue;
      }
      const prepare = prepareWith(options, backend);
      if (backend === 'postgres') {
        cleanups.push(() => dropPostgresRun(server.url, runId));
        const template = await preparePostgresTemplate(server.url, runId, prepare);
        backends.postgres = { available: true, label: server.label, url: server.url, template };
      } else {
        cleanups.push(() => dropMysqlRun(server.url, runId));
        const template = await prepareMysqlTemplate(server.url, runId, prepare);
        backends.mysql = { available: true, label: server.label, url: server.url, template };
      }
    }
  } catch (error) {
    await teardown().catch(() => {});
    throw error;
  }
  return { plan: { runId, failOnMissing, backends }, teardown };
}
