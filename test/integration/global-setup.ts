/**
 * sluice's own tests are sluice/testing's first user: the servers are found once per run
 * (SLUICE_PG_URL / SLUICE_MYSQL_URL / SLUICE_REDIS_URL, the local server, testcontainers),
 * and every SQL test database starts as a copy of a template made once per run: the example
 * service's migrations, and the models' tables. A backend found nowhere is skipped with one
 * loud line, and with CI=true fails the run.
 */
import { sluiceGlobalSetup } from 'sluice/testing/vitest';
import { migrationProvider } from '../../examples/service/src/migrations.js';
import { createSchema, type DB } from '../support/models-schema.js';

export default sluiceGlobalSetup<DB>({
  backends: ['postgres', 'mysql', 'sqlite', 'redis'],
  migrations: (backend) => ({ provider: migrationProvider(backend) }),
  seed: (database, backend) => createSchema(database, backend),
});
