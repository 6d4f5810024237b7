/**
 * `npm start`: opens the database (a SQLite file under ./data unless DATABASE_URL says
 * otherwise), applies the migrations, and serves until SIGINT or SIGTERM, then closes
 * everything and exits.
 */
import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { connect, migrate } from 'sluice';
import { buildApp } from './app.js';
import { ConfigError, readConfig } from './config.js';
import { createMetrics } from './metrics.js';
import { migrationProvider } from './migrations.js';
import type { DB } from './schema.js';

async function main(): Promise<void> {
  const config = readConfig();
  if (/^sqlite:/i.test(config.databaseUrl) && !/^sqlite::memory:$/i.test(config.databaseUrl)) {
    // SQLite creates the file, not the folder it goes in.
    await mkdir(dirname(config.databaseUrl.slice('sqlite:'.length).replace(/^\/\//, '')), { recursive: true });
  }
  const metrics = createMetrics();
  const database = connect<DB>(config.databaseUrl, {
    pool: { max: config.poolMax, maxWaiting: config.poolMaxWaiting },
    log: metrics.queryLog,
  });
  const where = database.location; // never the URL: it may hold a password
  try {
    const { results } = await migrate(database, { provider: migrationProvider(database.dialect) });
    const applied = results.filter((result) => result.status === 'applied').length;
    console.log(`sluice example: ${where}, ${applied === 0 ? 'schema up to date' : `${applied} migration(s) applied`}`);
  } catch (error) {
    await database.close();
    throw error;
  }

  const app = await buildApp({
    database,
    metrics,
    requestTimeoutMs: config.requestTimeoutMs,
    retryAfterSeconds: config.retryAfterSeconds,
    logger: { level: config.logLevel },
  });
  let closing: Promise<void> | undefined;
  const shutdown = (signal: string): void => {
    // Once: a signal can arrive twice (Ctrl-C reaches both tsx and this process, and tsx
    // relays it), and a second one must not cut the first one's shutdown short.
    if (closing !== undefined) return;
    console.log(`sluice example: ${signal}, finishing the requests in flight and closing`);
    closing = app
      .close() // stops accepting, waits for the requests in flight (each bounded by its deadline)
      .then(() => database.close())
      .then(() => console.log('sluice example: closed'));
  };
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => shutdown(signal));

  await app.listen({ host: config.host, port: config.port });
  const address = app.server.address();
  const port = typeof address === 'object' && address !== null ? address.port : config.port;
  console.log(`sluice example: listening on http://${config.host}:${port} (database: ${where}; try GET /posts, /healthz, /metrics)`);
}

main().catch((error: unknown) => {
  console.error(error instanceof ConfigError ? `sluice example: ${error.message}` : error);
  process.exitCode = 1;
});
