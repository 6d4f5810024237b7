/**
 * One deadline per request: every route's handler runs inside `withDeadline`, so each
 * query it makes (the wait for a connection included) is bounded by what is left of the
 * request's time, and a client that disconnects aborts them; sluice then cancels the
 * running statement on the server. The error handler turns the deadline into a 504.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest, RouteHandlerMethod } from 'fastify';
import type { Database } from 'sluice';

/** The reason a request's signal aborts with when its client goes away before the answer. */
export class ClientGoneError extends Error {
  override readonly name = 'ClientGoneError';
  constructor() {
    super('The client closed the connection before the response was sent: its queries were cancelled.');
  }
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** `false` for routes that make no query or bound their own (`/metrics`). Default true. */
    readonly deadline?: boolean;
  }
}

/**
 * A signal that aborts when the client disconnects before the response is finished.
 * Not Fastify's `request.signal`: on Node 20 that one aborts as soon as a request body has
 * been read (the request stream's own 'close'), so every POST would cancel itself.
 */
function clientGoneSignal(reply: FastifyReply): AbortSignal {
  const controller = new AbortController();
  // Gone already, while its body was read or its hooks ran: 'close' has been and gone.
  if (reply.raw.destroyed) controller.abort(new ClientGoneError());
  else {
    reply.raw.once('close', () => {
      if (!reply.raw.writableFinished) controller.abort(new ClientGoneError());
    });
  }
  return controller.signal;
}

export function requestDeadlines(app: FastifyInstance, options: { readonly database: Pick<Database<unknown>, 'withDeadline'>; readonly timeoutMs: number }): void {
  const { database, timeoutMs } = options;
  app.addHook('onRoute', (route) => {
    if (route.config?.deadline === false) return;
    const handler = route.handler as (this: FastifyInstance, request: FastifyRequest, reply: FastifyReply) => unknown;
    const withDeadline: RouteHandlerMethod = function (request, reply) {
      // Counted from the request's arrival: time spent reading its body is spent.
      const left = Math.max(0, timeoutMs - reply.elapsedTime);
      return database.withDeadline({ timeoutMs: left, signal: clientGoneSignal(reply) }, () => handler.call(this, request, reply));
    };
    route.handler = withDeadline;
  });
}
