import { describe } from 'vitest';
import { testServerUrl } from 'sluice/testing/vitest';
import { migrationScenarios } from './migration-scenarios.js';

const url = testServerUrl('postgres') ?? '';

describe.skipIf(url === '')('migrations over PostgreSQL (real server)', () => {
  migrationScenarios({
    url: async () => url,
    transactionalDdl: true,
    // Trust authentication ignores it: the CLI must still never print it.
    urlWithPassword: (plain) => {
      const withPassword = new URL(plain);
      withPassword.password = 'hunter2';
      return withPassword.toString();
    },
  });
});
