/** What one benchmark cell measured. Latencies in milliseconds. */
export interface Measurement {
  readonly opsPerSec: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
}

export interface MeasureOptions {
  readonly concurrency: number;
  readonly seconds: number;
  /** Operations each caller runs before measuring, to fill pools and warm the JIT. */
  readonly warmupOps: number;
  /** Time one operation in this many (1 = all); the clock is not free next to a µs-scale op. */
  readonly sampleEvery: number;
}

/** Runs `operation` from `concurrency` callers in a loop for `seconds`; ops/s and latency quantiles. */
export async function measure(operation: () => Promise<unknown>, options: MeasureOptions): Promise<Measurement> {
  const { concurrency, seconds, warmupOps, sampleEvery } = options;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (let i = 0; i < warmupOps; i++) await operation();
    }),
  );
  const samples: number[] = [];
  let ops = 0;
  let running = true;
  const stopAt = performance.now() + seconds * 1_000;
  const worker = async (): Promise<void> => {
    let n = 0;
    while (running) {
      n++;
      // Check the clock only every 64 ops; the check is not what we measure.
      if ((n & 63) === 0 && performance.now() >= stopAt) running = false;
      if (n % sampleEvery === 0) {
        const start = performance.now();
        await operation();
        samples.push(performance.now() - start);
      } else {
        await operation();
      }
      ops++;
    }
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: concurrency }, worker));
  const elapsed = (performance.now() - started) / 1_000;
  samples.sort((a, b) => a - b);
  const quantile = (q: number): number => samples[Math.min(samples.length - 1, Math.floor(q * samples.length))] ?? NaN;
  return { opsPerSec: ops / elapsed, p50Ms: quantile(0.5), p99Ms: quantile(0.99) };
}

/** The middle of several measurements of the same cell, by throughput. */
export function median<T extends { readonly opsPerSec: number }>(runs: readonly T[]): T {
  const sorted = [...runs].sort((a, b) => a.opsPerSec - b.opsPerSec);
  return sorted[Math.floor(sorted.length / 2)]!;
}

/** A plain-text table: the first `leftColumns` columns left-aligned, the rest right-aligned. */
export function formatTable(header: readonly string[], rows: ReadonlyArray<readonly string[]>, leftColumns: number): string {
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => row[column]!.length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((cell, column) => (column < leftColumns ? cell.padEnd(widths[column]!) : cell.padStart(widths[column]!)))
      .join('  ')
      .trimEnd();
  return [line(header), widths.map((width) => '-'.repeat(width)).join('  '), ...rows.map(line)].join('\n');
}
