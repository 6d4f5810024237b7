/**
 * Data flows one way, `testing -> orm -> drivers -> pool` (DESIGN.md): no folder of src
 * imports from a layer above it, so the pool knows nothing of SQL and the query layer
 * nothing of tests.
 */
import { readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { expect, test } from 'vitest';
import { sources, specifiers } from '../support/imports.js';

const SRC = join(import.meta.dirname, '../../src');
/** Each layer, and the layers above it that it must not import. */
const ABOVE: Readonly<Record<string, readonly string[]>> = {
  pool: ['drivers', 'orm', 'testing', 'cli'],
  drivers: ['orm', 'testing', 'cli'],
  orm: ['testing', 'cli'],
};

test('no layer of src imports a layer above it', () => {
  const offending: string[] = [];
  let checked = 0;
  for (const [layer, above] of Object.entries(ABOVE)) {
    for (const file of sources(join(SRC, layer))) {
      for (const specifier of specifiers(readFileSync(file, 'utf8'))) {
        if (!specifier.startsWith('.')) continue;
        checked++;
        const target = relative(SRC, resolve(dirname(file), specifier)).split(/[\\/]/)[0]!;
        if (above.includes(target)) offending.push(`${relative(SRC, file)} imports ${specifier}`);
      }
    }
  }
  expect(checked).toBeGreaterThan(50);
  expect(offending).toEqual([]);
});
