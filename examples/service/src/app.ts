/**
 * The service as a Fastify instance, built on a database the caller opened: `main.ts`
 * starts it, the tests and the benchmark start it on databases of their own.
 */
import { type TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import type { Database } from 'sluice';
import { serviceContext } from './context.js';
import { errorHandler } from './http-errors.js';
import type { ServiceMetrics } from './metrics.js';
import { sheddingServer } from './plugins/load-shedding.js';
import { requestDeadlines } from './plugins/request-deadline.js';
import { authorRoutes } from './routes/authors.js';
import { operationRoutes } from './routes/operations.js';
import { postRoutes } from './routes/posts.js';
import type { DB } from './schema.js';

export interface AppOptions {
  /** Opened with `connect()`, migrated, and with `log: metrics.queryLog` to time queries. */
  readonly database: Database<DB>;
  readonly metrics: ServiceMetrics;
  /** Each request's deadline, from its arrival; past it, 504. */
  readonly requestTimeoutMs: number;
  /** The `Retry-After` of a 503, in seconds. */
  readonly retryAfterSeconds: number;
  readonly logger?: FastifyServerOptions['logger'];
}

export async function buildApp(options: AppOptions): Promise<FastifyInstance> {
  const { database, metrics } = options;
  const app = Fastify({
    logger: options.logger ?? false,
    serverFactory: sheddingServer({ pool: database.pool, retryAfterSeconds: options.retryAfterSeconds, onShed: metrics.countShed }),
    // Unknown fields in a body are an error the client should hear about, not something
    // to drop quietly (Fastify's default removes them).
    ajv: { customOptions: { removeAdditional: false } },
  }).withTypeProvider<TypeBoxTypeProvider>();

  // Before the routes: it wraps each route's handler as the route is added.
  requestDeadlines(app, { database, timeoutMs: options.requestTimeoutMs });
  app.setErrorHandler(errorHandler({ retryAfterSeconds: options.retryAfterSeconds }));
  metrics.observePool(database);
  app.addHook('onResponse', async (request, reply) => {
    metrics.observeRequest({ method: request.method, route: request.routeOptions.url ?? 'unmatched', status: reply.statusCode }, reply.elapsedTime / 1000);
  });

  const context = serviceContext(database);
  await app.register(authorRoutes, context);
  await app.register(postRoutes, context);
  await app.register(operationRoutes, { database, metrics });
  return app;
}
