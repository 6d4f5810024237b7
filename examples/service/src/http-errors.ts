/**
 * Every error a request can end with, as an HTTP answer in one shape,
 * `{ statusCode, error, message }`:
 *
 * - 400: bad input (the schema's message names the field), 404: no such row,
 *   409: a unique key or reference conflict;
 * - 503 with `Retry-After`: the pool shed the request (its queue was full) or the database
 *   is unreachable or busy, so a retry soon may work;
 * - 504: the request's deadline passed (its queries were stopped on the server);
 * - 499 (nginx's "client closed request", for the log): the client went away first;
 * - 500 for the rest, without details (they go to the log, which never holds a password:
 *   sluice's errors carry none).
 */
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { STATUS_CODES } from 'node:http';
import {
  ConnectionError,
  ConnectionLostError,
  DatabaseError,
  ForeignKeyViolationError,
  PoolCreateError,
  PoolQueueFullError,
  PoolTimeoutError,
  QueryTimeoutError,
  UniqueViolationError,
} from 'sluice';
import { SHED_MESSAGE } from './plugins/load-shedding.js';
import { ClientGoneError } from './plugins/request-deadline.js';

/** An error a route throws on purpose, with the status and message the client gets. */
export class HttpError extends Error {
  override readonly name = 'HttpError';
  constructor(
    readonly statusCode: number,
    message: string,
  ) {
    super(message);
  }
}

export const notFound = (what: string): HttpError => new HttpError(404, `${what} was not found.`);
export const conflict = (message: string): HttpError => new HttpError(409, message);

interface Answer {
  readonly status: number;
  readonly message: string;
  readonly retryAfter?: boolean;
}

function answerFor(error: unknown, request: FastifyRequest): Answer {
  if (error instanceof HttpError) return { status: error.statusCode, message: error.message };
  if (error instanceof ClientGoneError) return { status: 499, message: error.message };
  if (error instanceof PoolQueueFullError) {
    return { status: 503, retryAfter: true, message: SHED_MESSAGE };
  }
  if (error instanceof QueryTimeoutError || (error instanceof PoolTimeoutError && error.reason !== 'create-failed')) {
    return { status: 504, message: `The request ran past its deadline; its queries were stopped.` };
  }
  if (error instanceof PoolTimeoutError || error instanceof PoolCreateError || error instanceof ConnectionError || error instanceof ConnectionLostError) {
    return { status: 503, retryAfter: true, message: 'The database is unavailable. Retry later.' };
  }
  if (error instanceof UniqueViolationError) return { status: 409, message: 'A row with the same unique value already exists.' };
  if (error instanceof ForeignKeyViolationError) return { status: 409, message: 'The row refers to a row that does not exist, or is referred to by others.' };
  if (error instanceof DatabaseError && error.retryable) {
    return { status: 503, retryAfter: true, message: 'The database was busy with conflicting work. Retry.' };
  }
  const fastifyError = error as Partial<FastifyError>;
  // Fastify's own 4xx: schema validation, malformed JSON, a body too large, a bad media type.
  if (typeof fastifyError.statusCode === 'number' && fastifyError.statusCode >= 400 && fastifyError.statusCode < 500) {
    return { status: fastifyError.statusCode, message: fastifyError.message ?? 'Bad request.' };
  }
  request.log.error({ err: error }, 'request failed');
  return { status: 500, message: 'Something went wrong on our side; it has been logged.' };
}

export function errorHandler(options: { readonly retryAfterSeconds: number }) {
  return (error: unknown, request: FastifyRequest, reply: FastifyReply): FastifyReply => {
    const answer = answerFor(error, request);
    // Shed requests are counted in /metrics, not logged: under overload a line each would
    // cost the CPU the service needs to serve the others.
    if (answer.status === 499) request.log.info('client went away; its queries were cancelled');
    else if (error instanceof PoolQueueFullError) request.log.debug(answer.message);
    else if (answer.status === 503 || answer.status === 504) request.log.warn({ code: (error as { code?: unknown }).code }, answer.message);
    if (answer.retryAfter === true) void reply.header('retry-after', String(options.retryAfterSeconds));
    return reply.code(answer.status).send({ statusCode: answer.status, error: answer.status === 499 ? 'Client Closed Request' : (STATUS_CODES[answer.status] ?? 'Error'), message: answer.message });
  };
}
