/**
 * Load shedding at the door. A request that arrives while the pool's queue is full would be
 * shed at its first query anyway (`PoolQueueFullError`), so it is answered 503 with
 * `Retry-After` before any of its work is done, and before Fastify itself does any: the
 * check sits in the HTTP server's request listener, ahead of routing, hooks, logging and
 * validation. Under overload every microsecond spent refusing a request is taken from the
 * requests being served (measured by `npm run bench:service`: a refusal made here instead
 * of in an `onRequest` hook halved the served p99 at 10x the pool's capacity). A request
 * refused here has done none of its work. One admitted can still be refused by the pool at
 * a later query (each query outside a transaction acquires on its own) after the work of
 * the earlier ones; the error handler answers it the same way, 503 with `Retry-After`.
 */
import { createServer, type IncomingMessage, type RequestListener, type Server, type ServerResponse } from 'node:http';
import type { Pool } from 'sluice';

export const SHED_MESSAGE = 'The service is at capacity: every database connection is busy and the queue is full. Retry later.';

/** Paths that must answer under overload too: monitoring (/metrics) and readiness (/healthz). */
const NEVER_SHED = ['/metrics', '/healthz'];

export interface LoadSheddingOptions {
  readonly pool: Pick<Pool<unknown>, 'stats'>;
  readonly retryAfterSeconds: number;
  /** Called for each request refused, for /metrics. */
  readonly onShed: () => void;
}

/** True when the pool would refuse an acquire now: its own rule (see `PoolStats.maxWaiting`). */
export function queueIsFull(pool: Pick<Pool<unknown>, 'stats'>): boolean {
  const { idle, waiting, maxWaiting } = pool.stats();
  return idle === 0 && waiting >= maxWaiting;
}

/** Fastify's `serverFactory`: an HTTP server that refuses requests at the door while the pool's queue is full. */
export function sheddingServer(options: LoadSheddingOptions): (handler: RequestListener) => Server {
  const { pool, onShed } = options;
  const headers = { 'content-type': 'application/json; charset=utf-8', 'retry-after': String(options.retryAfterSeconds) };
  const body = JSON.stringify({ statusCode: 503, error: 'Service Unavailable', message: SHED_MESSAGE });
  const exempt = (url: string | undefined): boolean => NEVER_SHED.some((path) => url === path || url?.startsWith(`${path}?`) === true);
  return (handler) =>
    createServer((request: IncomingMessage, response: ServerResponse) => {
      if (!queueIsFull(pool) || exempt(request.url)) {
        handler(request, response);
        return;
      }
      onShed();
      response.writeHead(503, headers).end(body);
    });
}
