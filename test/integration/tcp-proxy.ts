/**
 * A small TCP proxy for fault injection in integration tests. It listens on 127.0.0.1
 * (an ephemeral port) and forwards to a target on the loopback interface. Its mode can be
 * switched while connections are open:
 *
 * - `pass`: forward bytes both ways;
 * - `refuse`: reset every new connection as soon as it is accepted;
 * - `stall`: forward nothing in either direction and hold every socket open (current
 *   connections stop reading; new ones are accepted and held). Back to `pass`, what was
 *   held flows on, as after a network outage that ends;
 * - `drop`: reset every current connection now (one-shot: new connections are then
 *   handled as before, see `drop()` to drop only some).
 *
 * `close()` resets everything and stops listening: no socket or server is left.
 *
 * `delayMs` (an option of `start`, default 0) delays every chunk, each way, by that many
 * milliseconds, order kept per connection: the target seen across a network hop (the
 * service benchmark's "database in the same region"). Half-closes and clean closes wait
 * behind the bytes before them; a reset does not. Bytes already in the delay line when the
 * proxy stalls are delivered (they were on the wire); later ones are held.
 */
import { connect, createServer, isIP, type Server, type Socket } from 'node:net';

export type ProxyMode = 'pass' | 'refuse' | 'stall' | 'drop';

/** One proxied connection, as `drop()`'s filter sees it. */
export interface ProxiedConnection {
  /** The port the client connected from (the client's local port). */
  readonly clientPort: number | undefined;
  /**
   * The proxy's local port towards the target: what the server sees as the client's port
   * (PostgreSQL's `pg_stat_activity.client_port`). Undefined until connected.
   */
  readonly upstreamPort: number | undefined;
}

interface Link {
  readonly client: Socket;
  readonly upstream: Socket;
  closed: boolean;
  /** The delay lines of both directions (none without `delayMs`), stopped on teardown. */
  readonly delays: DelayLine[];
}

export interface TcpProxyOptions {
  /** Milliseconds added to every chunk, each way; order is kept per connection. Default 0. */
  readonly delayMs?: number;
}

/** Runs actions `delayMs` after they were queued, in order. */
class DelayLine {
  readonly #delayMs: number;
  #queue: Array<{ readonly at: number; readonly action: () => void }> = [];
  #head = 0;
  #timer: NodeJS.Timeout | undefined;

  constructor(delayMs: number) {
    this.#delayMs = delayMs;
  }

  push(action: () => void): void {
    this.#queue.push({ at: performance.now() + this.#delayMs, action });
    if (this.#timer === undefined) this.#arm();
  }

  stop(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#queue = [];
    this.#head = 0;
  }

  #arm(): void {
    const next = this.#queue[this.#head]!;
    this.#timer = setTimeout(() => this.#run(), Math.max(1, Math.ceil(next.at - performance.now())));
  }

  #run(): void {
    this.#timer = undefined;
    const now = performance.now();
    while (this.#head < this.#queue.length && this.#queue[this.#head]!.at <= now) this.#queue[this.#head++]!.action();
    if (this.#head === this.#queue.length) {
      this.#queue = [];
      this.#head = 0;
    } else if (this.#timer === undefined) {
      this.#arm();
    }
  }
}

const LOOPBACK_NAMES = new Set(['localhost', 'localhost.', 'ip6-localhost']);

/** True for `localhost`, 127.0.0.0/8 and ::1 (also as an IPv4-mapped address). */
export function isLoopback(host: string): boolean {
  const bare = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  if (LOOPBACK_NAMES.has(bare.toLowerCase())) return true;
  const version = isIP(bare);
  if (version === 4) return bare.startsWith('127.');
  if (version === 6) {
    const lower = bare.toLowerCase();
    return lower === '::1' || lower === '0:0:0:0:0:0:0:1' || /^::ffff:127\./.test(lower);
  }
  return false;
}

export class TcpProxy {
  readonly #server: Server;
  readonly #targetHost: string;
  readonly #targetPort: number;
  readonly #delayMs: number;
  readonly #links = new Set<Link>();
  #mode: Exclude<ProxyMode, 'drop'> = 'pass';
  #port = 0;
  #closing: Promise<void> | undefined;
  #accepted = 0;

  private constructor(targetHost: string, targetPort: number, delayMs: number) {
    this.#targetHost = targetHost;
    this.#targetPort = targetPort;
    this.#delayMs = delayMs;
    this.#server = createServer({ allowHalfOpen: false, pauseOnConnect: true }, (client) => this.#accept(client));
  }

  /** Starts a proxy to `targetHost:targetPort` (loopback only) on an ephemeral 127.0.0.1 port. */
  static async start(targetHost: string, targetPort: number, options: TcpProxyOptions = {}): Promise<TcpProxy> {
    if (!isLoopback(targetHost)) {
      throw new Error(`TcpProxy forwards to loopback addresses only, not to ${JSON.stringify(targetHost)}.`);
    }
    if (!Number.isInteger(targetPort) || targetPort <= 0 || targetPort > 65_535) {
      throw new Error(`TcpProxy: invalid target port ${String(targetPort)}.`);
    }
    const delayMs = options.delayMs ?? 0;
    if (!Number.isFinite(delayMs) || delayMs < 0) throw new Error(`TcpProxy: invalid delayMs ${String(delayMs)}.`);
    const proxy = new TcpProxy(targetHost, targetPort, delayMs);
    await proxy.#listen();
    return proxy;
  }

  /** The host to connect to: always 127.0.0.1. */
  get host(): string {
    return '127.0.0.1';
  }

  get port(): number {
    return this.#port;
  }

  get mode(): Exclude<ProxyMode, 'drop'> {
    return this.#mode;
  }

  /** Connections open now (a client accepted and not yet closed on both sides). */
  get openConnections(): number {
    return this.#links.size;
  }

  /** The connections open now. */
  get connections(): ProxiedConnection[] {
    return [...this.#links].map(infoOf);
  }

  /** Connections accepted since the start, refused ones included. */
  get acceptedConnections(): number {
    return this.#accepted;
  }

  /** Switches mode. `drop` resets every current connection and leaves the mode as it was. */
  setMode(mode: ProxyMode): void {
    if (this.#closing !== undefined) throw new Error('TcpProxy: closed.');
    switch (mode) {
      case 'drop':
        this.drop();
        return;
      case 'pass':
        this.#mode = 'pass';
        for (const link of this.#links) this.#flow(link);
        return;
      case 'stall':
        this.#mode = 'stall';
        for (const link of this.#links) {
          link.client.pause();
          link.upstream.pause();
        }
        return;
      case 'refuse':
        // Connections already open carry on: only new ones are refused.
        this.#mode = 'refuse';
        return;
      default:
        throw new Error(`TcpProxy: unknown mode ${String(mode satisfies never)}.`);
    }
  }

  /**
   * Resets current connections at once (the client sees ECONNRESET, the server a closed
   * socket): all of them, or those `which` selects. Returns how many were dropped.
   */
  drop(which?: (connection: ProxiedConnection) => boolean): number {
    let dropped = 0;
    for (const link of [...this.#links]) {
      if (which !== undefined && !which(infoOf(link))) continue;
      this.#teardown(link);
      dropped++;
    }
    return dropped;
  }

  /** Resets every connection and stops listening. Resolves once the server is closed. */
  close(): Promise<void> {
    this.#closing ??= new Promise<void>((resolve) => {
      this.#server.close(() => resolve());
      for (const link of [...this.#links]) this.#teardown(link);
    });
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      const onError = (error: Error): void => reject(error);
      this.#server.once('error', onError);
      this.#server.listen({ host: '127.0.0.1', port: 0, exclusive: true }, () => {
        this.#server.off('error', onError);
        const address = this.#server.address();
        if (address === null || typeof address === 'string') {
          reject(new Error('TcpProxy: the server has no TCP address.'));
          return;
        }
        this.#port = address.port;
        resolve();
      });
    });
  }

  #accept(client: Socket): void {
    this.#accepted++;
    if (this.#closing !== undefined || this.#mode === 'refuse') {
      client.on('error', () => {});
      client.resetAndDestroy();
      return;
    }
    const upstream = connect({ host: this.#targetHost, port: this.#targetPort });
    upstream.pause();
    const link: Link = { client, upstream, closed: false, delays: [] };
    this.#links.add(link);
    client.setNoDelay(true);
    upstream.setNoDelay(true);

    const forward = (from: Socket, to: Socket): void => {
      // Without a delay, at once; with one, through this direction's delay line.
      let deliver = (action: () => void): void => action();
      if (this.#delayMs > 0) {
        const line = new DelayLine(this.#delayMs);
        link.delays.push(line);
        deliver = (action) => line.push(() => {
          if (!link.closed) action();
        });
      }
      from.on('data', (chunk: Buffer) => {
        if (this.#mode === 'stall') {
          // Stalled between a read and the pause: hold the bytes back until `pass`.
          from.pause();
          from.unshift(chunk);
          return;
        }
        deliver(() => {
          if (!to.write(chunk)) from.pause();
        });
      });
      to.on('drain', () => {
        if (this.#mode !== 'stall' && !link.closed) from.resume();
      });
      // A half-close is passed on.
      from.on('end', () => {
        deliver(() => {
          if (!to.destroyed) to.end();
        });
      });
      // A clean close of one side closes the other once its pending bytes are written;
      // an error resets both: the proxy keeps no half-dead pair.
      from.on('close', (hadError: boolean) => {
        if (hadError) this.#teardown(link);
        else
          deliver(() => {
            if (!to.destroyed) to.destroySoon();
          });
        if (from.destroyed && to.destroyed) this.#forget(link);
      });
      from.on('error', () => this.#teardown(link));
    };
    forward(client, upstream);
    forward(upstream, client);
    upstream.once('connect', () => this.#flow(link));
  }

  /** Lets bytes flow on a link, unless the proxy stalls. */
  #flow(link: Link): void {
    if (link.closed || this.#mode === 'stall') return;
    // Until the target accepted, the client's bytes wait in the kernel.
    if (link.upstream.connecting) return;
    link.client.resume();
    link.upstream.resume();
  }

  /** Resets both sides at once. */
  #teardown(link: Link): void {
    if (link.closed) return;
    link.closed = true;
    this.#links.delete(link);
    for (const line of link.delays) line.stop();
    if (!link.client.destroyed) link.client.resetAndDestroy();
    if (!link.upstream.destroyed) link.upstream.destroy();
  }

  /** Both sides closed on their own. */
  #forget(link: Link): void {
    link.closed = true;
    this.#links.delete(link);
    for (const line of link.delays) line.stop();
  }
}

function infoOf(link: Link): ProxiedConnection {
  return { clientPort: link.client.remotePort, upstreamPort: link.upstream.localPort };
}
