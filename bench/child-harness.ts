/**
 * Preloaded (`node --import tsx --import ./bench/child-harness.ts ...`) into the child
 * processes of `bench:service`; it changes nothing the server does:
 * - when the benchmark goes away, even killed with SIGKILL, the pipe it holds as the child's
 *   stdin closes, and the child gets a SIGTERM (its own graceful shutdown), then exits
 *   anyway 5 s later: no orphan servers or proxies;
 * - it watches the child's event-loop delay (`monitorEventLoopDelay`, native, sampling every
 *   10 ms as prom-client's default metrics do) and, asked over the IPC channel, answers its
 *   p50/p99/max since the last question, then starts over.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';

const leave = (): void => {
  setTimeout(() => process.exit(1), 5_000).unref();
  process.kill(process.pid, 'SIGTERM');
};
process.stdin.once('end', leave).once('error', leave).resume();

if (process.send !== undefined) {
  const delay = monitorEventLoopDelay({ resolution: 10 });
  delay.enable();
  process.on('message', (message: unknown) => {
    if (message !== 'loop-delay?') return;
    process.send!({ loopDelay: { p50Ms: delay.percentile(50) / 1e6, p99Ms: delay.percentile(99) / 1e6, maxMs: delay.max / 1e6 } });
    delay.reset();
  });
  // The IPC channel must not keep a server alive once it has closed everything else.
  process.channel?.unref();
}
