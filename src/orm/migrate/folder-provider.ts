import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Migration, MigrationProvider } from 'kysely';
import { MigrationsInvalidError } from './migration-errors.js';

const MIGRATION_FILE = /^(?!.*\.d\.[cm]?ts$).*\.(?:[cm]?js|[cm]?ts)$/;

/**
 * The migrations of a folder: each `.js`/`.ts` file (`.mjs`, `.mts`, ...) exporting `up` (and
 * `down`), or a default export that has them, named after the file without its extension.
 *
 * Kysely's `FileMigrationProvider` does the same, but imports from inside `node_modules`,
 * where a TypeScript loader set up by the caller (vitest's, say) does not reach; importing
 * here loads `.ts` files wherever sluice's own modules are loaded by one (tsx, vitest).
 */
export class FolderMigrationProvider implements MigrationProvider {
  readonly folder: string;

  constructor(folder: string) {
    this.folder = path.resolve(folder);
  }

  async getMigrations(): Promise<Record<string, Migration>> {
    const files = (await readdir(this.folder)).filter((file) => MIGRATION_FILE.test(file)).sort();
    const migrations: Record<string, Migration> = {};
    for (const file of files) {
      const name = file.replace(/\.[^.]+$/, '');
      let module: { readonly default?: unknown } & Partial<Migration>;
      try {
        module = (await import(pathToFileURL(path.join(this.folder, file)).href)) as typeof module;
      } catch (error) {
        const typescript = (error as { readonly code?: unknown }).code === 'ERR_UNKNOWN_FILE_EXTENSION';
        throw new MigrationsInvalidError(
          typescript
            ? `Migration ${file} is TypeScript, which this Node.js cannot load: run under tsx (node --import tsx), or write .js migrations.`
            : `Migration ${file} cannot be loaded: ${error instanceof Error ? error.message : String(error)}`,
          error,
        );
      }
      const exported = module.default;
      migrations[name] = isMigration(exported) ? exported : (module as Migration);
    }
    return migrations;
  }
}

function isMigration(value: unknown): value is Migration {
  return typeof value === 'object' && value !== null && typeof (value as { readonly up?: unknown }).up === 'function';
}
