/** Reading a source tree's imports, for the tests that keep its boundaries. */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';

/** Every `.ts` file under `dir`. */
export function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? sources(join(dir, entry.name)) : entry.name.endsWith('.ts') ? [join(dir, entry.name)] : [],
  );
}

/** Every module specifier of a file: `import ... from`, `export ... from`, `import(...)`, side-effect imports. */
export function specifiers(text: string): string[] {
  const patterns = [/\bfrom\s+(['"])([^'"]+)\1/g, /\bimport\s*\(\s*(['"])([^'"]+)\1\s*\)/g, /^\s*import\s+(['"])([^'"]+)\1/gm];
  return patterns.flatMap((pattern) => [...text.matchAll(pattern)].map((match) => match[2]!));
}
