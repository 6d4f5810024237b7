/**
 * Preloaded (`node --import tsx --import ./bench/exit-with-parent.ts ...`) into the child
 * processes of `bench:service`: when the benchmark goes away, even killed with SIGKILL, the
 * pipe it holds as the child's stdin closes, and the child gets a SIGTERM (its own graceful
 * shutdown), then exits anyway 5 s later. No orphan servers or proxies.
 */
const leave = (): void => {
  setTimeout(() => process.exit(1), 5_000).unref();
  process.kill(process.pid, 'SIGTERM');
};
process.stdin.once('end', leave).once('error', leave).resume();
