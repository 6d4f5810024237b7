/**
 * A child process of `bench:service`: the test suite's TCP proxy (test/integration/tcp-proxy.ts)
 * in front of the database, each direction delayed by `--delay-ms`, so a server behind it
 * sees the database a network hop away. In a process of its own so its timers and copies
 * do not share an event loop with the server or the load generator.
 *
 * `node --import tsx bench/delay-proxy.ts <target host> <target port> <delay ms>`; prints
 * `delay-proxy: listening on 127.0.0.1:<port>` and runs until SIGTERM/SIGINT (bench/child-harness.ts
 * sends one when the benchmark goes away).
 */
import { TcpProxy } from '../test/integration/tcp-proxy.js';

const [host = '127.0.0.1', port = '5432', delay = '1'] = process.argv.slice(2);
const proxy = await TcpProxy.start(host, Number(port), { delayMs: Number(delay) });
console.log(`delay-proxy: listening on ${proxy.host}:${proxy.port} (to ${host}:${port}, +${delay} ms each way)`);

const stop = (): void => void proxy.close().then(() => process.exit(0));
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
