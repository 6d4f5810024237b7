import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { connect } from '../../src/orm/connect.js';
import { migrate, migrationStatus } from '../../src/orm/migrate/migrate.js';
import { MigrationError } from '../../src/orm/migrate/migration-errors.js';
import { migrationFile, migrationScenarios, SCRATCH, uniquePrefix, writeMigrations } from './migration-scenarios.js';

const directories: string[] = [];
afterAll(async () => {
  for (const directory of directories) await rm(directory, { recursive: true, force: true });
});

async function freshDatabase(): Promise<string> {
  const directory = await mkdtemp(path.join(tmpdir(), 'sluice-migrations-'));
  directories.push(directory);
  return `sqlite:${path.join(directory, 'app.db')}`;
}

describe('migrations over SQLite (a file per test)', () => {
  migrationScenarios({
    url: freshDatabase,
    transactionalDdl: true,
    // The second handle meets the first one's write lock as another process would: a short
    // busy timeout makes it notice (and say it waits) soon.
    connectOptions: { sqlite: { busyTimeoutMs: 100 } },
  });
});

describe("the README's migrate() example: a folder of migration files", () => {
  test('migrate(database, { folder }) applies the files in name order; a failing one is a MigrationError naming it', async () => {
    const folder = path.join(SCRATCH, uniquePrefix());
    directories.push(folder);
    await writeMigrations(folder, {
      '001_create_person': migrationFile(`await sql\`CREATE TABLE person (id integer PRIMARY KEY, name text)\`.execute(db);`),
      '002_broken': migrationFile(`await sql\`CREATE TABLE broken (id integer)\`.execute(db);
  await sql\`INSERT INTO no_such_table VALUES (1)\`.execute(db);`),
    });
    const database = connect<unknown>(await freshDatabase());
    try {
      const error = await migrate(database, { folder }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(MigrationError);
      expect((error as MigrationError).migrationName).toBe('002_broken');
      await rm(path.join(folder, '002_broken.ts'));
      const { results } = await migrate(database, { folder });
      expect(results.map((r) => [r.direction, r.name, r.status])).toEqual([['up', '001_create_person', 'applied']]);
      expect((await migrationStatus(database, { folder })).map((s) => s.executedAt !== undefined)).toEqual([true]);
    } finally {
      await database.close();
    }
  });
});
