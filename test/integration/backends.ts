/**
 * Finds the real database servers the integration tests run against. For each backend,
 * in order: its environment variable, the usual local default (127.0.0.1 on the standard
 * port), then a testcontainers container when a Docker engine answers. A backend found
 * nowhere is skipped with a loud notice, and under `CI=true` fails the run instead.
 */
import { connect } from 'node:net';

export type BackendName = 'postgres' | 'mysql';

interface BackendSpec {
  readonly env: string;
  readonly localUrl: string;
  readonly port: number;
  readonly image: string;
  readonly containerEnv: Readonly<Record<string, string>>;
  readonly urlFor: (host: string, port: number) => string;
}

export const BACKENDS: Readonly<Record<BackendName, BackendSpec>> = {
  postgres: {
    env: 'SLUICE_PG_URL',
    localUrl: 'postgres://postgres@127.0.0.1:5432/test',
    port: 5432,
    image: 'postgres:16',
    containerEnv: { POSTGRES_HOST_AUTH_METHOD: 'trust', POSTGRES_DB: 'test' },
    urlFor: (host, port) => `postgres://postgres@${host}:${port}/test`,
  },
  mysql: {
    env: 'SLUICE_MYSQL_URL',
    localUrl: 'mysql://root@127.0.0.1:3306/test',
    port: 3306,
    image: 'mysql:8',
    containerEnv: { MYSQL_ALLOW_EMPTY_PASSWORD: 'yes', MYSQL_DATABASE: 'test' },
    urlFor: (host, port) => `mysql://root@${host}:${port}/test`,
  },
};

export interface ResolvedBackend {
  readonly name: BackendName;
  readonly url: string | undefined;
  /** Where it came from, for the notice: never the URL itself (it may hold a password). */
  readonly source: 'env' | 'local' | 'testcontainers' | 'missing';
  readonly stop?: () => Promise<void>;
}

/** True when something accepts TCP connections on host:port within `timeoutMs`. */
export function isListening(host: string, port: number, timeoutMs = 1_000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, host);
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

async function startContainer(spec: BackendSpec): Promise<{ url: string; stop: () => Promise<void> } | undefined> {
  let testcontainers: typeof import('testcontainers');
  try {
    testcontainers = await import('testcontainers');
  } catch {
    return undefined;
  }
  try {
    // Asking for the runtime fails fast when no Docker engine answers.
    await testcontainers.getContainerRuntimeClient();
  } catch {
    return undefined;
  }
  const container = await new testcontainers.GenericContainer(spec.image)
    .withEnvironment({ ...spec.containerEnv })
    .withExposedPorts(spec.port)
    .withWaitStrategy(testcontainers.Wait.forListeningPorts())
    .start();
  return {
    url: spec.urlFor(container.getHost(), container.getMappedPort(spec.port)),
    stop: async () => {
      await container.stop();
    },
  };
}

export async function resolveBackend(name: BackendName): Promise<ResolvedBackend> {
  const spec = BACKENDS[name];
  const fromEnv = process.env[spec.env];
  if (fromEnv !== undefined && fromEnv !== '') return { name, url: fromEnv, source: 'env' };
  if (await isListening('127.0.0.1', spec.port)) return { name, url: spec.localUrl, source: 'local' };
  const container = await startContainer(spec);
  if (container !== undefined) return { name, url: container.url, source: 'testcontainers', stop: container.stop };
  return { name, url: undefined, source: 'missing' };
}
