/**
 * `ioredis` is an optional peer dependency: `import 'sluice'` must work without it. Only
 * the `sluice/redis` entry may load it.
 */
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import ts from 'typescript';
import { expect, test } from 'vitest';

const SRC = join(import.meta.dirname, '../../src');

/** The packages a module loads when imported: its static, non-type imports, followed through src. */
function packagesLoadedBy(entry: string): Set<string> {
  const packages = new Set<string>();
  const seen = new Set<string>();
  const visit = (file: string): void => {
    if (seen.has(file)) return;
    seen.add(file);
    const source = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.ES2022);
    for (const statement of source.statements) {
      let specifier: ts.Expression | undefined;
      if (ts.isImportDeclaration(statement) && statement.importClause?.isTypeOnly !== true) specifier = statement.moduleSpecifier;
      if (ts.isExportDeclaration(statement) && !statement.isTypeOnly) specifier = statement.moduleSpecifier;
      if (specifier === undefined || !ts.isStringLiteral(specifier)) continue;
      const name = specifier.text;
      if (name.startsWith('.')) visit(resolve(dirname(file), name.replace(/\.js$/, '.ts')));
      else packages.add(name);
    }
  };
  visit(join(SRC, entry));
  return packages;
}

test("'sluice' loads no ioredis; 'sluice/redis' does", () => {
  expect(packagesLoadedBy('index.ts')).not.toContain('ioredis');
  expect(packagesLoadedBy('testing/index.ts')).not.toContain('ioredis');
  expect(packagesLoadedBy('redis.ts')).toContain('ioredis');
});
