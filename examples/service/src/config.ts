/**
 * The service's settings, from environment variables, each with a safe default and a
 * reason. A bad value stops the start with a message naming the variable.
 */

export interface ServiceConfig {
  /** `DATABASE_URL`: `sqlite:`, `postgres://` or `mysql://`. Default: a SQLite file under ./data. */
  readonly databaseUrl: string;
  /** `HOST`. Default 127.0.0.1: a newcomer's example should not listen on every interface. */
  readonly host: string;
  /** `PORT`. Default 3000; 0 picks a free port (the start line says which). */
  readonly port: number;
  /**
   * `REQUEST_TIMEOUT_MS`: the deadline of each request, for every query it makes, the wait
   * for a connection included; past it the request answers 504. Default 5 s.
   */
  readonly requestTimeoutMs: number;
  /** `POOL_MAX`: database connections (SQLite: concurrent sessions). Default 10. */
  readonly poolMax: number;
  /**
   * `POOL_MAX_WAITING`: requests that may queue for a connection; beyond it the pool sheds
   * load and the request answers 503 at once. Default: as many as `POOL_MAX`, so a request
   * that waits, waits about one query's time, not the length of a backlog. At least 1: with
   * 0 not even the wait for a new connection to open is allowed, so a cold pool refuses all.
   */
  readonly poolMaxWaiting: number;
  /** `RETRY_AFTER_S`: the `Retry-After` a shed request is given, in seconds. Default 1. */
  readonly retryAfterSeconds: number;
  /** `LOG_LEVEL`: pino's levels, or `silent`. Default `info`. */
  readonly logLevel: string;
}

export const DEFAULT_DATABASE_URL = 'sqlite:./data/sluice-example.db';

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/** Thrown for a setting that cannot be used; the message names the variable. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

function integer(env: NodeJS.ProcessEnv, name: string, fallback: number, least: number, most = Number.MAX_SAFE_INTEGER): number {
  const text = env[name];
  if (text === undefined || text === '') return fallback;
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < least || value > most) {
    throw new ConfigError(`${name} must be a whole number from ${least} to ${most}, not "${text}".`);
  }
  return value;
}

export function readConfig(env: NodeJS.ProcessEnv = process.env): ServiceConfig {
  const poolMax = integer(env, 'POOL_MAX', 10, 1, 1000);
  const logLevel = env['LOG_LEVEL'] || 'info';
  if (!LOG_LEVELS.includes(logLevel)) throw new ConfigError(`LOG_LEVEL must be one of ${LOG_LEVELS.join(', ')}, not "${logLevel}".`);
  return {
    databaseUrl: env['DATABASE_URL'] || DEFAULT_DATABASE_URL,
    host: env['HOST'] || '127.0.0.1',
    port: integer(env, 'PORT', 3000, 0, 65535),
    requestTimeoutMs: integer(env, 'REQUEST_TIMEOUT_MS', 5000, 1),
    poolMax,
    poolMaxWaiting: integer(env, 'POOL_MAX_WAITING', poolMax, 1),
    retryAfterSeconds: integer(env, 'RETRY_AFTER_S', 1, 0),
    logLevel,
  };
}
