/**
 * The example service is built only on sluice's public API: it imports `sluice` by name, as
 * a user's code would, and never reaches into `src/`.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, test } from 'vitest';

const ROOT = join(import.meta.dirname, '../../examples/service/src');

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? sources(join(dir, entry.name)) : entry.name.endsWith('.ts') ? [join(dir, entry.name)] : [],
  );
}

test('examples/service imports sluice only through its package name', () => {
  const files = sources(ROOT);
  expect(files.length).toBeGreaterThan(5);
  const imports = files.flatMap((file) =>
    [...readFileSync(file, 'utf8').matchAll(/from\s+'([^']+)'/g)].map((match) => ({ file: file.slice(ROOT.length + 1), specifier: match[1]! })),
  );
  expect(imports.some((entry) => entry.specifier === 'sluice')).toBe(true);
  const reachingIn = imports.filter((entry) => entry.specifier.startsWith('.') && !entry.specifier.startsWith('./') && !entry.specifier.startsWith('../'));
  const outside = imports.filter((entry) => /(^|\/)src\/|^\.\.\/\.\.\//.test(entry.specifier));
  expect([...reachingIn, ...outside]).toEqual([]);
});
