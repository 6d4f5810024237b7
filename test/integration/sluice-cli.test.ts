import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { runNode, startNode } from '../support/run-node.js';
import { CLI, SCRATCH, uniquePrefix } from './migration-scenarios.js';

// The per-database CLI tests are in migration-scenarios.ts; these need no server (SQLite).
const directories: string[] = [];
afterAll(async () => {
  for (const directory of directories) await rm(directory, { recursive: true, force: true });
});

async function freshDatabase(): Promise<string> {
  const directory = await mkdtemp(path.join(tmpdir(), 'sluice-cli-'));
  directories.push(directory);
  return `sqlite:${path.join(directory, 'app.db')}`;
}

describe('the sluice CLI', () => {
  test('--help works for sluice, migrate and each migrate command', async () => {
    const commands = [[], ['migrate'], ['migrate', 'latest'], ['migrate', 'up'], ['migrate', 'down'], ['migrate', 'status'], ['migrate', 'make']];
    const outcomes = await Promise.all(commands.map((command) => runNode([CLI, ...command, '--help'])));
    outcomes.forEach((outcome, i) => {
      expect(outcome.code, commands[i]!.join(' ')).toBe(0);
      expect(outcome.stdout).toContain(`Usage: sluice ${commands[i]!.join(' ')}`.trimEnd());
    });
    expect(outcomes[2]!.stdout).toContain('--url <url>');
    expect(outcomes[2]!.stdout).toContain('--folder <dir>');
    expect(outcomes[6]!.stdout).toContain('<name>');
  });

  test('migrate make writes a timestamped migration that migrate latest then runs, with DATABASE_URL', async () => {
    const folder = path.join(SCRATCH, uniquePrefix());
    directories.push(folder);
    const made = await runNode([CLI, 'migrate', 'make', 'create_person', '--folder', folder]);
    expect(made.code).toBe(0);
    const files = readdirSync(folder);
    expect(files).toHaveLength(1);
    expect(files[0]).toMatch(/^\d{14}_create_person\.ts$/);
    expect(readFileSync(path.join(folder, files[0]!), 'utf8')).toContain('export async function up(');
    expect(made.stdout).toContain(files[0]);

    const url = await freshDatabase();
    const run = await startNode([CLI, 'migrate', 'latest', '--folder', folder], { env: { DATABASE_URL: url } }).exited;
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.stdout).toContain(files[0]!.replace(/\.ts$/, ''));
    expect(run.stdout).toContain('Applied 1 migration');
    expect(existsSync(url.slice('sqlite:'.length))).toBe(true);

    const bad = await runNode([CLI, 'migrate', 'make', 'no spaces', '--folder', folder]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('INVALID_OPTION');
    const noUrl = await runNode([CLI, 'migrate', 'status', '--folder', folder]);
    expect(noUrl.code).toBe(1);
    expect(noUrl.stderr).toContain('--url');
  });
});
