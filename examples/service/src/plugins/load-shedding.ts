/**
 * Load shedding at the door: a request that arrives while the pool's queue is full would be
 * shed at its first query anyway (`PoolQueueFullError`), so it is answered 503 with
 * `Retry-After` before any of its work is done: no validation, no handler, no query. Under
 * overload that matters twice: a shed answer costs a fraction of the CPU (which the
 * requests being served need), and no request is shed halfway, after queries it then
 * throws away. A request admitted can still be shed by the pool at a later query; the
 * error handler answers that one the same way.
 */
import type { FastifyInstance } from 'fastify';
import type { Pool } from 'sluice';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** `false` for routes that must answer under overload too (`/metrics`, `/healthz`). Default true. */
    readonly shed?: boolean;
  }
}

export const SHED_MESSAGE = 'The service is at capacity: every database connection is busy and the queue is full. Retry later.';

export function shedWhenQueueFull(
  app: FastifyInstance,
  options: { readonly pool: Pick<Pool<unknown>, 'stats'>; readonly retryAfterSeconds: number; readonly onShed: () => void },
): void {
  const { pool, onShed } = options;
  const retryAfter = String(options.retryAfterSeconds);
  const body = JSON.stringify({ statusCode: 503, error: 'Service Unavailable', message: SHED_MESSAGE });
  app.addHook('onRequest', (request, reply, done) => {
    const stats = pool.stats();
    // The pool's own rule for shedding an acquire (see PoolStats.maxWaiting).
    if (stats.idle > 0 || stats.waiting < stats.maxWaiting || request.routeOptions.config.shed === false) {
      done();
      return;
    }
    onShed();
    void reply.code(503).header('retry-after', retryAfter).type('application/json; charset=utf-8').send(body);
  });
}
