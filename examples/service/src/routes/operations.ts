/** `/healthz` (is the database answering?) and `/metrics` (Prometheus). */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { type Database, sql } from 'sluice';
import { Type } from 'typebox';
import type { ServiceMetrics } from '../metrics.js';
import type { DB } from '../schema.js';

/** A health check answers fast or not at all: a database that takes longer is not healthy. */
const HEALTH_TIMEOUT_MS = 1000;

const HealthOut = Type.Object({ status: Type.String(), database: Type.String(), message: Type.Optional(Type.String()) });

export const operationRoutes: FastifyPluginAsyncTypebox<{ readonly database: Database<DB>; readonly metrics: ServiceMetrics }> = async (
  app,
  { database, metrics },
) => {
  // Not shed at the door, but its ping goes through the pool like any query, so a pool
  // that sheds load fails it: this instance cannot take more work right now (a readiness
  // check, not a liveness one).
  app.get('/healthz', { schema: { response: { 200: HealthOut, 503: HealthOut } } }, async (_request, reply) => {
    try {
      await database.withDeadline({ timeoutMs: HEALTH_TIMEOUT_MS }, () => sql`SELECT 1`.execute(database.db));
      return { status: 'ok', database: database.dialect };
    } catch (error) {
      const code = typeof error === 'object' && error !== null && 'code' in error ? String(error.code) : 'UNKNOWN';
      return reply.code(503).send({ status: 'unavailable', database: database.dialect, message: `The database did not answer a ping (${code}).` });
    }
  });

  app.get('/metrics', { config: { deadline: false } }, async (_request, reply) => {
    return reply.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });
};
