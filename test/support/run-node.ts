import { spawn } from 'node:child_process';

/** How a child Node process ended, and what it printed. */
export interface ChildOutcome {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs `node --import tsx <args>` and waits for it to exit, for tests that prove a process
 * exits on its own (nothing left holding the event loop). The kill after `guardMs` is a
 * guard against a hang, not a timing assertion: a killed child shows as `signal: 'SIGKILL'`.
 */
export async function runNode(args: readonly string[], guardMs = 15_000): Promise<ChildOutcome> {
  const child = spawn(process.execPath, ['--import', 'tsx', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const killer = setTimeout(() => child.kill('SIGKILL'), guardMs);
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) =>
    child.on('exit', (exitCode, exitSignal) => resolve([exitCode, exitSignal])),
  );
  clearTimeout(killer);
  return { code, signal, stdout, stderr };
}

/** A child Node process started by `startNode`, its output so far, and its end. */
export interface RunningChild {
  /** What it has printed so far. */
  output(): { readonly stdout: string; readonly stderr: string };
  readonly exited: Promise<ChildOutcome>;
  /** Its process id. */
  readonly pid: number | undefined;
  /** Sends it a signal (SIGKILL: dies at once, as a crashed process does). */
  kill(signal: NodeJS.Signals): void;
}

/**
 * Starts `node --import tsx <args>` and returns at once, for tests that watch a process while
 * it runs (two processes racing for a lock). `env` is added to this process's environment.
 * The kill after `guardMs` is a guard against a hang, as in `runNode`.
 */
export function startNode(args: readonly string[], options: { readonly env?: Readonly<Record<string, string>>; readonly guardMs?: number } = {}): RunningChild {
  const child = spawn(process.execPath, ['--import', 'tsx', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...options.env },
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const killer = setTimeout(() => child.kill('SIGKILL'), options.guardMs ?? 15_000);
  const exited = new Promise<ChildOutcome>((resolve) =>
    child.on('close', (code, signal) => {
      clearTimeout(killer);
      resolve({ code, signal, stdout, stderr });
    }),
  );
  return { output: () => ({ stdout, stderr }), exited, pid: child.pid, kill: (signal) => child.kill(signal) };
}
