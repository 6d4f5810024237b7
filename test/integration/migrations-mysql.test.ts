import { describe } from 'vitest';
import { testServerUrl } from 'sluice/testing/vitest';
import { migrationScenarios } from './migration-scenarios.js';

const url = testServerUrl('mysql') ?? '';

describe.skipIf(url === '')('migrations over MySQL/MariaDB (real server)', () => {
  migrationScenarios({ url: async () => url, transactionalDdl: false });
});
