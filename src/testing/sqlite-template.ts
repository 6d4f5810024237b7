/**
 * SQLite test databases: the run's migrations are applied once, to a template file; each
 * test file gets a copy of it (a file copy: milliseconds). All of a run's files live in one
 * temporary folder, removed at the end of the run.
 */
import { copyFile, mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileDatabaseName, isStale } from './names.js';

export interface SqliteTemplate {
  readonly dialect: 'sqlite';
  readonly runId: string;
  readonly directory: string;
  readonly path: string;
}

const exists = (path: string): Promise<boolean> => stat(path).then(() => true, () => false);

/** Creates the template file and runs `prepare` on it (migrations, seed); `prepare` closes its database, checkpointing it. */
export async function prepareSqliteTemplate(runId: string, prepare: (url: string) => Promise<void>): Promise<SqliteTemplate> {
  const directory = await mkdtemp(join(tmpdir(), `${runId}-`));
  const path = join(directory, 'template.db');
  try {
    await prepare(`sqlite:${path}`);
  } catch (error) {
    await dropSqliteRun(directory);
    throw error;
  }
  return { dialect: 'sqlite', runId, directory, path };
}

/** A copy of the template file for one test file (or, `empty`, the path of a new one). */
export async function cloneSqlite(template: SqliteTemplate, empty = false): Promise<{ readonly name: string; readonly url: string }> {
  const name = `${fileDatabaseName(template.runId)}.db`;
  const path = join(template.directory, name);
  if (empty) return { name: path, url: `sqlite:${path}` };
  await copyFile(template.path, path);
  // A write-ahead log not yet checkpointed is part of the database.
  if (await exists(`${template.path}-wal`)) await copyFile(`${template.path}-wal`, `${path}-wal`);
  return { name: path, url: `sqlite:${path}` };
}

export async function dropSqliteDatabase(path: string): Promise<void> {
  await Promise.all(['', '-wal', '-shm'].map((suffix) => rm(`${path}${suffix}`, { force: true })));
}

/** Removes the run's folder, and, as far as it can, other runs' older than a day (a run killed before its end). */
export async function dropSqliteRun(directory: string): Promise<void> {
  await rm(directory, { recursive: true, force: true });
  const others = await readdir(tmpdir()).catch(() => []);
  // Folders are named `<run id>-<random>`: the run id is what isStale reads.
  for (const name of others) {
    if (isStale(`${name.split('-')[0]}_`)) await rm(join(tmpdir(), name), { recursive: true, force: true }).catch(() => {});
  }
}
