import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { InvalidOptionError } from '../../errors.js';

const TEMPLATE_TS = `import { type Kysely, sql } from 'kysely';

// A migration runs against whatever the schema is at that point: don't type it with today's DB interface.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await sql\`SELECT 1\`.execute(db); // your change here
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await sql\`SELECT 1\`.execute(db); // undo it here
}
`;

const TEMPLATE_JS = `import { sql } from 'kysely';

/** @param {import('kysely').Kysely<any>} db */
export async function up(db) {
  await sql\`SELECT 1\`.execute(db); // your change here
}

/** @param {import('kysely').Kysely<any>} db */
export async function down(db) {
  await sql\`SELECT 1\`.execute(db); // undo it here
}
`;

/**
 * Writes a new migration file, `<UTC timestamp>_<name>.ts` (or `.js`), into `folder` (made if
 * missing), and returns its path. The timestamp makes names sort in creation order, which is
 * the order the Migrator runs them in. Never overwrites a file.
 */
export async function makeMigration(folder: string, name: string, options: { readonly language?: 'ts' | 'js'; readonly now?: Date } = {}): Promise<string> {
  if (!/^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$/.test(name)) {
    throw new InvalidOptionError('name', 'use letters, digits, _ and - (e.g. create_person), at most 100 characters.');
  }
  const stamp = (options.now ?? new Date()).toISOString().replace(/[-:T]/g, '').slice(0, 14);
  const language = options.language ?? 'ts';
  await mkdir(folder, { recursive: true });
  const file = path.join(path.resolve(folder), `${stamp}_${name}.${language}`);
  await writeFile(file, language === 'ts' ? TEMPLATE_TS : TEMPLATE_JS, { flag: 'wx' });
  return file;
}
