import { parseArgs } from 'node:util';

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

/**
 * Runs `count` clients `rounds` times each and gives every client's median round, in
 * client order. The order rotates each round, so no client always runs first (cold) or
 * last (after the others' garbage).
 */
export async function medianOfRounds<T extends { readonly opsPerSec: number }>(
  count: number,
  rounds: number,
  runClient: (index: number) => Promise<T>,
): Promise<T[]> {
  const byClient: T[][] = Array.from({ length: count }, () => []);
  for (let round = 0; round < rounds; round++) {
    for (let i = 0; i < count; i++) {
      const index = (i + round) % count;
      byClient[index]!.push(await runClient(index));
    }
  }
  return byClient.map((runs) => median(runs));
}

/** The options every benchmark takes: `--json`, `--seconds`, `--rounds`, `--concurrency 1,10,100`. */
export interface BenchArgs {
  readonly json: boolean;
  readonly seconds: number;
  readonly rounds: number;
  readonly levels: number[];
  /** Options a benchmark adds of its own, as given. */
  readonly extra: Readonly<Record<string, string | undefined>>;
}

export function benchArgs(defaults: { seconds: string; concurrency: string }, extra: Record<string, string> = {}): BenchArgs {
  const { values } = parseArgs({
    options: {
      json: { type: 'boolean', default: false },
      seconds: { type: 'string', default: defaults.seconds },
      rounds: { type: 'string', default: '3' },
      concurrency: { type: 'string', default: defaults.concurrency },
      ...Object.fromEntries(Object.entries(extra).map(([name, value]) => [name, { type: 'string' as const, default: value }])),
    },
  });
  const { json, seconds, rounds, concurrency, ...rest } = values as Record<string, string | boolean>;
  return {
    json: json === true,
    seconds: Number(seconds),
    rounds: Number(rounds),
    levels: String(concurrency).split(',').map(Number),
    extra: rest as Record<string, string>,
  };
}

/**
 * One cell of a client-by-client comparison: makes the client, runs `operation` on ids
 * 1..ids in turn from `concurrency` callers for `seconds`, closes the client.
 */
export async function measureClient<C extends { close(): Promise<void> }>(
  make: () => C,
  operation: (client: C, id: number) => Promise<unknown>,
  options: { readonly concurrency: number; readonly seconds: number; readonly ids: number },
): Promise<{ readonly client: C; readonly measured: Measurement }> {
  const client = make();
  let next = 0;
  const measured = await measure(() => operation(client, (next++ % options.ids) + 1), {
    concurrency: options.concurrency,
    seconds: options.seconds,
    warmupOps: 50,
    sampleEvery: 1,
  });
  await client.close();
  return { client, measured };
}
