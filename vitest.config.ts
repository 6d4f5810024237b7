import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  // The example service imports sluice by name, as a user would (tsconfig.json maps it too).
  resolve: { alias: { sluice: fileURLToPath(new URL('./src/index.ts', import.meta.url)) } },
  test: {
    include: ['test/**/*.test.ts'],
    // Finds PostgreSQL and MySQL/MariaDB for test/integration (see test/integration/backends.ts).
    globalSetup: ['test/integration/global-setup.ts'],
    // The memory test measures the heap after a forced collection.
    execArgv: ['--expose-gc'],
    testTimeout: 60_000,
    // An unawaited rejection in a test is a bug in the pool or the test: fail on it.
    dangerouslyIgnoreUnhandledErrors: false,
  },
});
