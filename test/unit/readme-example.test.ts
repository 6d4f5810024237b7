/**
 * The README's sluice/testing example is a real test file (test/integration/readme-example.test.ts,
 * run by `npm test`): this keeps the README's copy of it word for word.
 */
import { readFileSync } from 'node:fs';
import { expect, test } from 'vitest';

const read = (path: string): string => readFileSync(new URL(path, import.meta.url), 'utf8');

test("the README's example test file is test/integration/readme-example.test.ts, as it is", () => {
  const readme = read('../../README.md');
  const block = /<!-- test\/integration\/readme-example\.test\.ts -->\n```ts\n([\s\S]*?)```/.exec(readme);
  expect(block, 'the README has the example, after its marker comment').not.toBeNull();
  expect(block![1]).toBe(read('../integration/readme-example.test.ts'));
});
