/**
 * `npm start`, the README's first command, as a newcomer runs it: the example service's
 * entry in a process of its own. It applies the migrations, says where it listens and which
 * database it uses (never a password), serves, and exits cleanly on SIGTERM.
 */
import { spawn } from 'node:child_process';
import { type AddressInfo, createServer } from 'node:net';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { openTestDatabase, skipReason } from 'sluice/testing/vitest';

const ROOT = join(import.meta.dirname, '../..');
const ENTRY = join(ROOT, 'examples/service/src/main.ts');
const workDir = mkdtempSync(join(tmpdir(), 'sluice-start-'));
afterAll(() => rmSync(workDir, { recursive: true, force: true }));

interface Started {
  readonly baseUrl: string;
  readonly output: () => string;
  stop(): Promise<{ readonly code: number | null; readonly output: string }>;
}

/**
 * Starts the service as `npm start` does (`tsx examples/service/src/main.ts`), on a free
 * port, but in `cwd` (a temporary folder, so that its ./data is not the repository's): tsx
 * and the repository's tsconfig.json (which maps `sluice` to the source) are named outright.
 */
async function start(env: Record<string, string>, cwd = workDir, command: readonly string[] = [process.execPath, '--import', import.meta.resolve('tsx'), ENTRY]): Promise<Started> {
  // A process group of its own: `npm start` runs tsx, which runs node; a signal goes to all.
  const child = spawn(command[0]!, command.slice(1), {
    detached: true,
    cwd,
    env: { ...process.env, PORT: '0', LOG_LEVEL: 'warn', TSX_TSCONFIG_PATH: join(ROOT, 'tsconfig.json'), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  // 'close', not 'exit': npm may exit before the service it started has written its last line.
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  // A guard against a hang, not a timing assertion.
  const signal = (name: NodeJS.Signals): void => {
    try {
      process.kill(-child.pid!, name);
    } catch {
      // Already gone.
    }
  };
  const guard = setTimeout(() => signal('SIGKILL'), 45_000);
  const baseUrl = await new Promise<string>((resolve, reject) => {
    const poll = setInterval(() => {
      const match = /listening on (http:\/\/[^\s]+)/.exec(output);
      if (match !== null) {
        clearInterval(poll);
        resolve(match[1]!);
      }
    }, 20);
    void exited.then((code) => {
      clearInterval(poll);
      reject(new Error(`the service exited (${code}) before listening:\n${output}`));
    });
  });
  return {
    baseUrl,
    output: () => output,
    async stop() {
      signal('SIGTERM');
      const code = await exited;
      clearTimeout(guard);
      return { code, output };
    },
  };
}

describe('npm start: the example service as a process', () => {
  test('on a fresh machine: creates ./data/sluice-example.db, migrates, says where it listens and on what, serves, stops on SIGTERM', async () => {
    const cwd = mkdtempSync(join(workDir, 'fresh-'));
    const service = await start({ DATABASE_URL: '' }, cwd);
    const database = join(cwd, 'data', 'sluice-example.db');
    expect(service.output()).toContain('1 migration(s) applied');
    expect(service.output()).toMatch(new RegExp(`listening on http://127\\.0\\.0\\.1:\\d+ \\(database: SQLite ${database.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
    expect(existsSync(database)).toBe(true);

    expect(await (await fetch(`${service.baseUrl}/healthz`)).json()).toEqual({ status: 'ok', database: 'sqlite' });
    const created = await fetch(`${service.baseUrl}/authors`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'Ada', email: 'ada@example.com' }),
    });
    expect(created.status).toBe(201);

    const { code, output } = await service.stop();
    expect(code).toBe(0);
    expect(output).toContain('SIGTERM, finishing the requests in flight and closing');
    expect(output).toContain('sluice example: closed');

    // Started again on the same file: nothing to migrate, the row is still there.
    const again = await start({ DATABASE_URL: '' }, cwd);
    try {
      expect(again.output()).toContain('schema up to date');
      const list = (await (await fetch(`${again.baseUrl}/authors`)).json()) as { items: Array<{ name: string }> };
      expect(list.items.map((author) => author.name)).toEqual(['Ada']);
    } finally {
      expect((await again.stop()).code).toBe(0);
    }
  });

  test.skipIf(skipReason('postgres') !== undefined)('DATABASE_URL switches it to PostgreSQL with no code change, and its password is never printed', async ({ onTestFinished }) => {
    // An empty database of its own: the service migrates it at start.
    const testDatabase = await openTestDatabase('postgres', { empty: true });
    onTestFinished(() => testDatabase.drop());
    const url = new URL(testDatabase.url);
    // This server trusts local connections, so any password is accepted, and must not be shown.
    url.password = 'pa55-w0rd-not-for-logs';
    // A time zone far from the server's (UTC here): times must not shift by it.
    const service = await start({ DATABASE_URL: url.toString(), TZ: 'America/New_York' });
    try {
      expect(service.output()).toMatch(/database: PostgreSQL [^\s]+:\d+\/sluice_t\w+/);
      const created = await fetch(`${service.baseUrl}/authors`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'Ada', email: 'ada@example.com' }),
      });
      const { createdAt } = (await created.json()) as { createdAt: string };
      // Hours apart if a time zone were misapplied; the margin is not a timing assertion.
      expect(Math.abs(Date.parse(createdAt) - Date.now())).toBeLessThan(10 * 60_000);
      expect(await (await fetch(`${service.baseUrl}/healthz`)).json()).toEqual({ status: 'ok', database: 'postgres' });
      const bad = await fetch(`${service.baseUrl}/posts/0`);
      expect(bad.status).toBe(400);
    } finally {
      const { code, output } = await service.stop();
      expect(code).toBe(0);
      expect(output).not.toContain('pa55-w0rd-not-for-logs');
    }
  });

  test('`npm start` itself, as the README says, from the repository', async () => {
    const service = await start({ DATABASE_URL: `sqlite:${join(workDir, 'npm-start.db')}` }, ROOT, ['npm', 'start', '--silent']);
    try {
      expect(service.output()).toContain(`(database: SQLite ${join(workDir, 'npm-start.db')}`);
      expect((await fetch(`${service.baseUrl}/healthz`)).status).toBe(200);
    } finally {
      // npm, tsx and the service each get the signal; the service closes cleanly all the same.
      const { output } = await service.stop();
      expect(output).toContain('sluice example: closed');
    }
  });

  test('a port already in use stops the start with the reason, and leaves nothing running', async () => {
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const { port } = blocker.address() as AddressInfo;
    try {
      await expect(start({ PORT: String(port), DATABASE_URL: `sqlite:${join(workDir, 'busy-port.db')}` })).rejects.toThrow(
        /exited \(1\) before listening:[\s\S]*could not start:[\s\S]*EADDRINUSE/,
      );
    } finally {
      blocker.close();
    }
  });

  test('a bad setting stops the start with a message naming the variable', async () => {
    await expect(start({ PORT: 'eighty', DATABASE_URL: `sqlite:${join(workDir, 'never.db')}` })).rejects.toThrow(/PORT must be a whole number from 0 to 65535, not "eighty"/);
  });
});
