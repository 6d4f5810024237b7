import { describe, inject } from 'vitest';
import { migrationScenarios } from './migration-scenarios.js';

const url = inject('backends').mysql;

describe.skipIf(url === '')('migrations over MySQL/MariaDB (real server)', () => {
  migrationScenarios({ url: async () => url, transactionalDdl: false });
});
