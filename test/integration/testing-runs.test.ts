/**
 * sluice/testing as a user's project runs it: a child vitest on the project of
 * test/fixtures/testing-kit (its own config, global setup and two test files), on the real
 * servers, and with every server missing.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, test } from 'vitest';
import { testServerUrl } from 'sluice/testing/vitest';
import type { ChildOutcome } from '../support/run-node.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CONFIG = fileURLToPath(new URL('../fixtures/testing-kit/vitest.config.ts', import.meta.url));
const VITEST = join(ROOT, 'node_modules/vitest/vitest.mjs');
const scratch = mkdtempSync(join(tmpdir(), 'sluice-testing-runs-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** Runs the kit project with vitest in a child process; the kill after 90 s is a guard against a hang. */
function runKitProject(env: Readonly<Record<string, string | undefined>>): Promise<ChildOutcome> {
  const barrier = mkdtempSync(join(scratch, 'barrier-'));
  const childEnv: Record<string, string> = {};
  for (const [name, value] of Object.entries({ ...process.env, NO_COLOR: '1', KIT_BARRIER_DIR: barrier, ...env })) {
    if (value !== undefined) childEnv[name] = value;
  }
  const child = spawn(process.execPath, [VITEST, 'run', '--config', CONFIG], { cwd: ROOT, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const killer = setTimeout(() => child.kill('SIGKILL'), 90_000);
  return new Promise((resolve) =>
    child.on('close', (code, signal) => {
      clearTimeout(killer);
      resolve({ code, signal, stdout, stderr });
    }),
  );
}

/** Every server missing: local URLs at a closed port, no variables, and a Docker endpoint that refuses. */
const NOTHING_ANYWHERE = {
  KIT_BACKENDS: 'postgres,mysql,redis,sqlite',
  KIT_PG_LOCAL: 'postgres://postgres:not-for-your-eyes@127.0.0.1:1/test',
  KIT_MYSQL_LOCAL: 'mysql://root@127.0.0.1:1/test',
  KIT_REDIS_LOCAL: 'redis://127.0.0.1:1',
  SLUICE_PG_URL: undefined,
  SLUICE_MYSQL_URL: undefined,
  SLUICE_REDIS_URL: undefined,
  // testcontainers reads it first: a Docker engine that does not answer, even on a machine that has one.
  DOCKER_HOST: 'tcp://127.0.0.1:1',
};

const servers = ['postgres', 'mysql'] as const;
const missing = servers.filter((backend) => testServerUrl(backend) === undefined);

describe('sluice/testing in a project of its own (child vitest runs)', () => {
  test.skipIf(missing.length > 0)('two test files in parallel workers, writing rows with the same keys, never collide', async () => {
    const run = await runKitProject({ KIT_BACKENDS: 'postgres,mysql,sqlite', SLUICE_PG_URL: testServerUrl('postgres'), SLUICE_MYSQL_URL: testServerUrl('mysql'), CI: 'true' });
    const output = run.stdout + run.stderr;
    expect(run.code, output).toBe(0);
    // 2 files x 3 backends, each test meeting the other file's while both held their rows.
    expect(output).toMatch(/Tests\s+6 passed \(6\)/);
    expect(output).not.toMatch(/skipped/);
  });

  test('every server missing and no Docker engine: one line says so, the tests skip; with CI=true the run fails', async () => {
    const relaxed = await runKitProject({ ...NOTHING_ANYWHERE, CI: 'false' });
    const relaxedOutput = relaxed.stdout + relaxed.stderr;
    expect(relaxed.code, relaxedOutput).toBe(0);
    const lines = relaxedOutput.split('\n').filter((line) => line.includes('[sluice/testing] no server'));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/no server for PostgreSQL \(SLUICE_PG_URL is not set; nothing usable at 127\.0\.0\.1:1\/test \(ECONNREFUSED\)\)/);
    expect(lines[0]).toContain('MySQL/MariaDB (SLUICE_MYSQL_URL is not set');
    expect(lines[0]).toContain('Redis (SLUICE_REDIS_URL is not set');
    expect(lines[0]).toContain('testcontainers: no Docker engine answers');
    expect(lines[0]).toContain('SKIPPED');
    // SQLite needs no server: its tests ran; the servers' were skipped.
    expect(relaxedOutput).toMatch(/Tests\s+2 passed \| 4 skipped \(6\)/);

    const strict = await runKitProject({ ...NOTHING_ANYWHERE, CI: 'true' });
    const strictOutput = strict.stdout + strict.stderr;
    expect(strict.code, strictOutput).not.toBe(0);
    expect(strictOutput).toMatch(/NoTestServerError: \[sluice\/testing\] no server for PostgreSQL .*With CI=true this fails the run\./);
    // Failed, not skipped: no skip line was printed.
    expect(strictOutput.split('\n').filter((line) => line.startsWith('[sluice/testing] no server'))).toEqual([]);
    // The kit's error, not a stack from inside testcontainers; and never the URL's password.
    expect(strictOutput).not.toMatch(/node_modules\/testcontainers/);
    expect(relaxedOutput + strictOutput).not.toContain('not-for-your-eyes');
  });
});
