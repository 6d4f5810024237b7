/**
 * sluice with Kysely 0.29, the newest minor its peer range allows (devDependency
 * `kysely-0.29`, an npm alias): a copy of the source whose `kysely` resolves to 0.29 runs
 * sluice's public API end to end (migrations, models, transactions, withConnection) and
 * 0.29's own `execute({ signal })`. Kysely 0.29 moved `Migrator` out of its root export;
 * this is where such a change shows. sluice/testing's per-test transaction is checked there too.
 */
import { cpSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { openTestDatabase, skipReason } from 'sluice/testing/vitest';
import { runNode } from '../support/run-node.js';

const ROOT = join(import.meta.dirname, '../..');
const side = mkdtempSync(join(tmpdir(), 'sluice-kysely-next-'));
afterAll(() => rmSync(side, { recursive: true, force: true }));

beforeAll(() => {
  cpSync(join(ROOT, 'src'), join(side, 'src'), { recursive: true });
  // At the same place relative to src/ as in the repository, so its imports hold.
  cpSync(join(ROOT, 'test/fixtures/kysely-next-check.ts'), join(side, 'test/fixtures/kysely-next-check.ts'));
  writeFileSync(join(side, 'package.json'), JSON.stringify({ type: 'module' }));
  mkdirSync(join(side, 'node_modules'));
  for (const entry of readdirSync(join(ROOT, 'node_modules'))) {
    if (entry === 'kysely' || entry === 'kysely-0.29') continue;
    symlinkSync(join(ROOT, 'node_modules', entry), join(side, 'node_modules', entry));
  }
  symlinkSync(join(ROOT, 'node_modules/kysely-0.29'), join(side, 'node_modules/kysely'));
});

async function check(url: string): Promise<Record<string, unknown>> {
  const outcome = await runNode([join(side, 'test/fixtures/kysely-next-check.ts'), url], 60_000);
  expect(outcome.code, outcome.stderr).toBe(0);
  return JSON.parse(outcome.stdout.trim().split('\n').pop()!) as Record<string, unknown>;
}

const expected = {
  kysely: expect.stringMatching(/^0\.29\./),
  migrated: ['001_pets:applied'],
  instance: true,
  pets: ['Rex', 'Tom'],
  signal: 'aborted with the reason',
  afterTestTransaction: 2,
};

describe('sluice on Kysely 0.29', () => {
  test('SQLite: migrations, models, transactions, withConnection, and execute({ signal })', async () => {
    const seen = await check(`sqlite:${join(side, 'check.db')}`);
    expect(seen).toMatchObject({ ...expected, afterwards: 2, inTestTransaction: 3 });
    expect(seen.error).toBeUndefined();
  });

  test.skipIf(skipReason('postgres') !== undefined)('PostgreSQL: the same, the signal cancelling pg_sleep on the server', async ({ onTestFinished }) => {
    // An empty database of its own: the check runs its own migrations and creates plain `owners` and `pets` tables.
    const testDatabase = await openTestDatabase('postgres', { empty: true });
    onTestFinished(() => testDatabase.drop());
    const seen = await check(testDatabase.url);
    expect(seen).toMatchObject({ ...expected, afterwards: 2, stoppedOnServer: true, inTestTransaction: 4 });
    expect(seen.error).toBeUndefined();
  });
});
