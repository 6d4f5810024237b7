import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const source = (path: string): string => fileURLToPath(new URL(path, import.meta.url));

export default defineConfig({
  // The example service and the README's example test import sluice by name, as a user
  // would (tsconfig.json maps the same names).
  resolve: {
    alias: [
      { find: /^sluice$/, replacement: source('./src/index.ts') },
      { find: /^sluice\/testing$/, replacement: source('./src/testing/index.ts') },
      { find: /^sluice\/testing\/vitest$/, replacement: source('./src/testing/vitest.ts') },
      { find: /^sluice\/redis$/, replacement: source('./src/redis.ts') },
    ],
  },
  test: {
    include: ['test/**/*.test.ts'],
    // sluice/testing: finds PostgreSQL and MySQL/MariaDB, migrates the templates each test
    // file's database is made from (see test/integration/global-setup.ts).
    globalSetup: ['test/integration/global-setup.ts'],
    // The memory test measures the heap after a forced collection.
    execArgv: ['--expose-gc'],
    testTimeout: 60_000,
    // An unawaited rejection in a test is a bug in the pool or the test: fail on it.
    dangerouslyIgnoreUnhandledErrors: false,
  },
});
