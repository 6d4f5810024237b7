/**
 * Finds a server for the tests, in order: its environment variable, the usual local server,
 * then a testcontainers container when a Docker engine answers. What was used is said in
 * one line, and so is why nothing was: never a stack from deep inside testcontainers, and
 * never a URL (it may hold a password).
 */
import { sql } from 'kysely';
import { connect as connectTcp } from 'node:net';
import { describeError, SluiceError } from '../errors.js';
import { connect } from '../orm/connect.js';
import { NoTestServerError } from './errors.js';

/** The servers the kit can find. SQLite needs none. */
export type ServerBackend = 'postgres' | 'mysql' | 'redis';

/** Where to look for one backend's server; every field has a default (see `SERVER_DEFAULTS`). */
export interface ServerSettings {
  /** The environment variable read first. */
  readonly env?: string;
  /** The usual local server, tried second; `false` skips it. */
  readonly local?: string | false;
  /** The image testcontainers starts when a Docker engine answers; `false` never starts one. */
  readonly image?: string | false;
}

export const SERVER_DEFAULTS: { readonly [B in ServerBackend]: Required<ServerSettings> } = {
  postgres: { env: 'SLUICE_PG_URL', local: 'postgres://postgres@127.0.0.1:5432/test', image: 'postgres:16-alpine' },
  mysql: { env: 'SLUICE_MYSQL_URL', local: 'mysql://root@127.0.0.1:3306/test', image: 'mysql:8.4' },
  redis: { env: 'SLUICE_REDIS_URL', local: 'redis://127.0.0.1:6379', image: 'redis:7-alpine' },
};

/** How the kit names each server in what it prints. */
export const SERVER_NAMES: { readonly [B in ServerBackend]: string } = { postgres: 'PostgreSQL', mysql: 'MySQL/MariaDB', redis: 'Redis' };

export type ServerSource = 'env' | 'local' | 'testcontainers';

export interface ResolvedServer {
  readonly backend: ServerBackend;
  /** The server's URL. It may hold a password: print `label`, never this. */
  readonly url: string;
  readonly source: ServerSource;
  /** Where it is and where it came from, safe to print: `PostgreSQL 127.0.0.1:5432/test (local server)`. */
  readonly label: string;
  /** Stops the container the kit started; nothing for a server it found. */
  stop(): Promise<void>;
}

export interface FindServerOptions {
  readonly settings?: ServerSettings;
  /** Where the environment variable is read. Default `process.env`. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** How long each probe may take. Default 3 s. */
  readonly probeTimeoutMs?: number;
}

/** host:port/database of a URL: never its user, password or query. */
export function describeUrl(url: string): string {
  try {
    const { hostname, port, pathname } = new URL(url);
    return `${hostname}${port === '' ? '' : `:${port}`}${pathname === '/' ? '' : pathname}`;
  } catch {
    return '(an unparsable URL)';
  }
}

/** Finds a server for `backend`, or throws a `NoTestServerError` whose message is one line saying why there is none. */
export async function findServer(backend: ServerBackend, options: FindServerOptions = {}): Promise<ResolvedServer> {
  const settings = { ...SERVER_DEFAULTS[backend], ...options.settings };
  const env = options.env ?? process.env;
  const timeoutMs = options.probeTimeoutMs ?? 3_000;
  const name = SERVER_NAMES[backend];
  const found = (url: string, source: ServerSource, stop: () => Promise<void> = async () => {}): ResolvedServer => ({
    backend,
    url,
    source,
    label: `${name} ${describeUrl(url)} (${source === 'env' ? `from ${settings.env}` : source === 'local' ? 'local server' : 'testcontainers'})`,
    stop,
  });
  const fail = (reasons: readonly string[], advice: string): never => {
    throw new NoTestServerError(backend, `[sluice/testing] no ${name} server for the tests: ${reasons.join('; ')}. ${advice}`, reasons);
  };

  const fromEnv = env[settings.env];
  if (fromEnv !== undefined && fromEnv !== '') {
    // The variable says where the server is: an answer from elsewhere would test the wrong one.
    const problem = await probe(backend, fromEnv, timeoutMs);
    if (problem !== undefined) fail([`${settings.env} is set, but ${name} at ${describeUrl(fromEnv)} does not answer (${problem})`], `Check the server, or unset ${settings.env}.`);
    return found(fromEnv, 'env');
  }
  const reasons = [`${settings.env} is not set`];
  if (settings.local !== false) {
    const problem = await probe(backend, settings.local, timeoutMs);
    if (problem === undefined) return found(settings.local, 'local');
    reasons.push(`nothing usable at ${describeUrl(settings.local)} (${problem})`);
  }
  if (settings.image !== false) {
    const container = await startContainer(backend, settings.image);
    if ('url' in container) return found(container.url, 'testcontainers', container.stop);
    reasons.push(`testcontainers: ${container.problem}`);
  }
  return fail(reasons, `Set ${settings.env}, start a server (docker compose up -d), or start a Docker engine.`);
}

/** Why `url` is not a usable server, or `undefined` when it is: it accepts TCP, then answers a query (a PING). */
export async function probe(backend: ServerBackend, url: string, timeoutMs: number): Promise<string | undefined> {
  let host: string;
  let port: number;
  try {
    const parsed = new URL(url);
    host = parsed.hostname.replace(/^\[|\]$/g, '');
    port = Number(parsed.port || { postgres: 5432, mysql: 3306, redis: 6379 }[backend]);
  } catch {
    return 'not a valid URL';
  }
  // A refused port says so at once, where a pool would retry until its deadline.
  const tcp = await tcpProblem(host, port, timeoutMs);
  if (tcp !== undefined) return tcp;
  if (backend === 'redis') return redisPingProblem(host, port, timeoutMs);
  const database = connect<unknown>(url, { pool: { max: 1, acquireTimeoutMs: timeoutMs } });
  try {
    await database.withDeadline({ timeoutMs }, () => sql`SELECT 1`.execute(database.db));
    return undefined;
  } catch (error) {
    return reasonOf(error);
  } finally {
    await database.close();
  }
}

/** An error's code, and its cause's when it has one (a pool timeout caused by a refused connection). */
function reasonOf(error: unknown): string {
  const code = describeError(error);
  const cause = error instanceof Error ? error.cause : undefined;
  return cause !== undefined && error instanceof SluiceError ? `${code}: ${describeError(cause)}` : code;
}

function tcpProblem(host: string, port: number, timeoutMs: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = connectTcp({ host, port });
    const done = (problem: string | undefined): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(problem);
    };
    const timer = setTimeout(() => done(`no answer within ${timeoutMs} ms`), timeoutMs);
    socket.once('connect', () => done(undefined));
    socket.once('error', (error) => done(describeError(error)));
  });
}

/** Sends PING in Redis's protocol; a server that asks for a password (NOAUTH) is there too. */
function redisPingProblem(host: string, port: number, timeoutMs: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = connectTcp({ host, port });
    let reply = '';
    const done = (problem: string | undefined): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(problem);
    };
    const timer = setTimeout(() => done(`no PING reply within ${timeoutMs} ms`), timeoutMs);
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk) => {
      reply += chunk.toString('latin1');
      if (!reply.includes('\r\n')) return;
      done(reply.startsWith('+PONG') || reply.startsWith('-NOAUTH') ? undefined : 'not a Redis server');
    });
    socket.once('error', (error) => done(describeError(error)));
  });
}

/** Started containers are stopped by their `stop`; a missing Docker engine or module is a reason, not an error. */
async function startContainer(
  backend: ServerBackend,
  image: string,
): Promise<{ readonly url: string; readonly stop: () => Promise<void> } | { readonly problem: string }> {
  let testcontainers: typeof import('testcontainers');
  try {
    testcontainers = await import('testcontainers');
  } catch {
    return { problem: 'the testcontainers package is not installed' };
  }
  try {
    // Fails fast (well under a second) when no Docker engine answers.
    await testcontainers.getContainerRuntimeClient();
  } catch {
    return { problem: 'no Docker engine answers' };
  }
  try {
    const started = await startModule(backend, image);
    return { url: started.url, stop: async () => void (await started.container.stop()) };
  } catch (error) {
    if (error instanceof SluiceError) return { problem: error.message };
    throw new SluiceError('CONTAINER_FAILED', `testcontainers could not start ${image} (${describeError(error)}).`, { cause: error });
  }
}

interface StartedModule {
  readonly url: string;
  readonly container: { stop(): Promise<unknown> };
}

async function startModule(backend: ServerBackend, image: string): Promise<StartedModule> {
  const missing = (module: string): SluiceError =>
    new SluiceError('CONTAINER_FAILED', `the ${module} package is not installed (npm i -D ${module})`);
  switch (backend) {
    case 'postgres': {
      const module = await import('@testcontainers/postgresql').catch(() => {
        throw missing('@testcontainers/postgresql');
      });
      const container = await new module.PostgreSqlContainer(image).withDatabase('test').withUsername('postgres').withPassword('postgres').start();
      return { url: container.getConnectionUri(), container };
    }
    case 'mysql': {
      const module = await import('@testcontainers/mysql').catch(() => {
        throw missing('@testcontainers/mysql');
      });
      const container = await new module.MySqlContainer(image).withDatabase('test').withRootPassword('test').start();
      // Root: the kit creates a database per test file.
      return { url: container.getConnectionUri(true), container };
    }
    case 'redis': {
      const module = await import('@testcontainers/redis').catch(() => {
        throw missing('@testcontainers/redis');
      });
      const container = await new module.RedisContainer(image).start();
      return { url: container.getConnectionUrl(), container };
    }
  }
}
