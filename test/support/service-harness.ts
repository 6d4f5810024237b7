/**
 * Starts the example service (examples/service) on a database of the test's own, listening
 * on a free port on 127.0.0.1, and calls it over real HTTP.
 */
import type { FastifyInstance } from 'fastify';
import { connect, type ConnectPoolOptions, type Database, type SqliteConnectOptions } from '../../src/index.js';
import { migrate } from '../../src/orm/migrate/migrate.js';
import { buildApp } from '../../examples/service/src/app.js';
import { createMetrics, type ServiceMetrics } from '../../examples/service/src/metrics.js';
import { migrationProvider } from '../../examples/service/src/migrations.js';
import type { DB } from '../../examples/service/src/schema.js';

export type ServiceDialect = Database<DB>['dialect'];

export interface ServiceOptions {
  readonly pool?: ConnectPoolOptions;
  readonly sqlite?: SqliteConnectOptions;
  readonly requestTimeoutMs?: number;
  readonly retryAfterSeconds?: number;
  /** Apply the migrations first (a service pointed at an unreachable database cannot). Default true. */
  readonly migrate?: boolean;
  /** Routes a test adds before the service starts listening. */
  readonly extend?: (app: FastifyInstance, database: Database<DB>) => void;
}

export interface RunningService {
  readonly database: Database<DB>;
  readonly app: FastifyInstance;
  readonly metrics: ServiceMetrics;
  readonly baseUrl: string;
  /** `fetch` on the service with a JSON body, giving the status, headers and parsed body. */
  call(method: string, path: string, body?: unknown, init?: RequestInit): Promise<ServiceAnswer>;
  close(): Promise<void>;
}

export interface ServiceAnswer {
  readonly status: number;
  readonly headers: Headers;
  // What the service answered: JSON objects whose shapes the tests assert on.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  readonly body: any;
}

export async function startService(url: string, options: ServiceOptions = {}): Promise<RunningService> {
  const metrics = createMetrics();
  const database = connect<DB>(url, {
    pool: { max: 4, ...options.pool },
    log: metrics.queryLog,
    ...(options.sqlite === undefined ? {} : { sqlite: options.sqlite }),
  });
  if (options.migrate !== false) await migrate(database, { provider: migrationProvider(database.dialect) });
  const app = await buildApp({
    database,
    metrics,
    requestTimeoutMs: options.requestTimeoutMs ?? 5_000,
    retryAfterSeconds: options.retryAfterSeconds ?? 1,
  });
  options.extend?.(app, database);
  const baseUrl = await app.listen({ host: '127.0.0.1', port: 0 });
  return {
    database,
    app,
    metrics,
    baseUrl,
    async call(method, path, body, init = {}) {
      const response = await fetch(`${baseUrl}${path}`, {
        method,
        ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body), headers: { 'content-type': 'application/json' } }),
        ...init,
      });
      const text = await response.text();
      const isJson = (response.headers.get('content-type') ?? '').includes('application/json');
      return { status: response.status, headers: response.headers, body: isJson && text !== '' ? JSON.parse(text) : text };
    },
    async close() {
      await app.close();
      await database.close();
    },
  };
}

/** Empties the service's tables between tests (children first). */
export async function clearServiceTables(database: Database<DB>): Promise<void> {
  for (const table of ['post_tags', 'comments', 'tags', 'posts', 'authors'] as const) await database.db.deleteFrom(table).execute();
}
