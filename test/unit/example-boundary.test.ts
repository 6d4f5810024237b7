/**
 * The example service is built only on sluice's public API: it imports `sluice` by name, as
 * a user's code would, never a file of sluice's own, and nothing outside its own folder.
 */
import { readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { expect, test } from 'vitest';
import { sources, specifiers } from '../support/imports.js';

const ROOT = join(import.meta.dirname, '../../examples/service/src');

test('examples/service imports sluice only through its package name, and nothing outside its folder', () => {
  const files = sources(ROOT);
  expect(files.length).toBeGreaterThan(5);
  const imports = files.flatMap((file) => specifiers(readFileSync(file, 'utf8')).map((specifier) => ({ file: relative(ROOT, file), specifier })));
  expect(imports.filter((entry) => entry.specifier === 'sluice').length).toBeGreaterThan(5);
  const offending = imports.filter(({ file, specifier }) => {
    if (specifier.startsWith('.')) return relative(ROOT, resolve(dirname(join(ROOT, file)), specifier)).startsWith('..');
    return specifier.startsWith('sluice/') || specifier.startsWith('/');
  });
  expect(offending).toEqual([]);
});

test('the check itself catches a reach into sluice\'s source', () => {
  expect(specifiers(`import { x } from "../../../src/index.js";\nexport * from './a.js';\nconst m = await import('sluice/internal');`)).toEqual([
    '../../../src/index.js',
    './a.js',
    'sluice/internal',
  ]);
});
