/**
 * Helpers shared by the fault tests (faults-postgres, faults-mysql): where a server listens,
 * URLs through the TCP proxy, outcomes of promises, liveness bounds, and what is left open.
 * None of them asserts on how long something took.
 */
import { createServer, Socket } from 'node:net';
import type { DriverConnection } from '../../src/drivers/driver.js';
import type { Database } from '../../src/orm/connect.js';
import type { DestroyReason } from '../../src/pool/events.js';
import type { TcpProxy } from './tcp-proxy.js';

/** Where the real server listens, read from its URL (`defaultPort` when the URL names none). */
export function targetOf(serverUrl: string, defaultPort: number): { host: string; port: number } {
  const parsed = new URL(serverUrl);
  const host = parsed.hostname.startsWith('[') ? parsed.hostname.slice(1, -1) : parsed.hostname;
  return { host, port: parsed.port === '' ? defaultPort : Number(parsed.port) };
}

/** True when something accepts TCP connections on host:port within `timeoutMs`. */
export function isListening(host: string, port: number, timeoutMs = 1_000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = new Socket();
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
    socket.connect(port, host);
  });
}

/** `serverUrl` with its host and port swapped for the proxy's (and, optionally, a password). */
export function viaProxy(serverUrl: string, proxy: TcpProxy, password?: string): string {
  const parsed = new URL(serverUrl);
  parsed.hostname = proxy.host;
  parsed.port = String(proxy.port);
  if (password !== undefined) parsed.password = password;
  return parsed.toString();
}

/** What a promise settled to, as a value: the result or the error. */
export async function outcomeOf<T>(promise: Promise<T>): Promise<{ ok: true; value: T } | { ok: false; error: unknown }> {
  try {
    return { ok: true, value: await promise };
  } catch (error) {
    return { ok: false, error };
  }
}

/**
 * Polls `condition` until it holds, for at most `limitMs` (a bound, so that a bug shows as a
 * failed assertion instead of a hung test; not a timing assertion). Returns the last result.
 */
/** A port on 127.0.0.1 that nothing listens on (it was free a moment ago). */
export async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export async function eventually(condition: () => boolean | Promise<boolean>, limitMs = 5_000): Promise<boolean> {
  const giveUpAt = Date.now() + limitMs;
  for (;;) {
    if (await condition()) return true;
    if (Date.now() >= giveUpAt) return false;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Waits for a promise, but at most `limitMs`: a liveness bound, not a timing assertion. */
export async function settledWithin<T>(
  promise: Promise<T>,
  limitMs: number,
): Promise<{ settled: true; ok: true; value: T } | { settled: true; ok: false; error: unknown } | { settled: false }> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hung = new Promise<{ settled: false }>((resolve) => {
    timer = setTimeout(() => resolve({ settled: false }), limitMs);
  });
  try {
    return await Promise.race([outcomeOf(promise).then((outcome) => ({ settled: true as const, ...outcome })), hung]);
  } finally {
    clearTimeout(timer);
  }
}

/** Records every `destroy` event of a database's pool. */
export function recordDestroys<DB>(database: Database<DB>): Array<{ resource: DriverConnection; reason: DestroyReason }> {
  const destroyed: Array<{ resource: DriverConnection; reason: DestroyReason }> = [];
  database.pool.on('destroy', (event) => destroyed.push(event));
  return destroyed;
}

/** Spies on the process-level crash paths for the duration of a test. */
export function watchProcess(): { readonly seen: unknown[]; stop(): void } {
  const seen: unknown[] = [];
  const onUncaught = (error: unknown): void => void seen.push(error);
  const onUnhandled = (reason: unknown): void => void seen.push(reason);
  process.on('uncaughtException', onUncaught);
  process.on('unhandledRejection', onUnhandled);
  return {
    seen,
    stop() {
      process.off('uncaughtException', onUncaught);
      process.off('unhandledRejection', onUnhandled);
    },
  };
}

/**
 * This process's sockets connected to `port` that are still open (not destroyed), read from
 * Node's list of live handles: what would keep the process alive. Half-closed sockets count.
 */
export function liveSocketsTo(port: number): number {
  const { _getActiveHandles: activeHandles } = process as unknown as { _getActiveHandles?: () => unknown[] };
  if (typeof activeHandles !== 'function') throw new Error('process._getActiveHandles is not available');
  return activeHandles
    .call(process)
    .filter((handle) => handle instanceof Socket && handle.remotePort === port && !handle.destroyed).length;
}

/** Lets timers and I/O callbacks already due run, so late errors surface before we look. */
export const settleEventLoop = async (): Promise<void> => {
  for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
  await new Promise((resolve) => setTimeout(resolve, 20));
};
