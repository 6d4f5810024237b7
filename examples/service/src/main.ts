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

/** The longest a start waits for its migrations (see below). */
const MIGRATION_TIMEOUT_MS = 60_000;
/** How much longer than a request's deadline a shutdown may take before the process exits anyway. */
const SHUTDOWN_MARGIN_MS = 5_000;

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
  console.log(`sluice example: ${where}: applying migrations`);
  try {
    // Bounded: a database that does not answer fails the start with a clear error instead
    // of a silent wait (this schema migrates in milliseconds; another instance migrating
    // at the same moment holds the lock for as long).
    const { results } = await database.withDeadline({ timeoutMs: MIGRATION_TIMEOUT_MS }, () =>
      migrate(database, { provider: migrationProvider(database.dialect) }),
    );
    const applied = results.filter((result) => result.status === 'applied').length;
    console.log(`sluice example: ${applied === 0 ? 'schema up to date' : `${applied} migration(s) applied`}`);
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
  let closing = false;
  const shutdown = (signal: string): void => {
    // Once: a signal can come twice (Ctrl-C reaches both tsx and this process), and the
    // second must not cut the first one's shutdown short.
    if (closing) return;
    closing = true;
    console.log(`sluice example: ${signal}, finishing the requests in flight and closing`);
    // Requests in flight end by their deadline; this bounds what else could hold the close
    // (a client still sending a body, say).
    setTimeout(() => {
      console.error('sluice example: could not close in time; exiting');
      process.exit(1);
    }, config.requestTimeoutMs + SHUTDOWN_MARGIN_MS).unref();
    app
      .close() // stops accepting, waits for the requests in flight
      .then(() => database.close())
      .then(
        () => console.log('sluice example: closed'),
        (error: unknown) => {
          console.error('sluice example: closing failed:', error);
          process.exitCode = 1;
        },
      );
  };
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => shutdown(signal));

  let address: string;
  try {
    address = await app.listen({ host: config.host, port: config.port });
  } catch (error) {
    // A port in use, say: nothing may be left running (the pool's workers would keep the process alive).
    await app.close();
    await database.close();
    throw error;
  }
  console.log(`sluice example: listening on ${address} (database: ${where}; try GET /posts, /healthz, /metrics)`);
}

main().catch((error: unknown) => {
  if (error instanceof ConfigError) console.error(`sluice example: ${error.message}`);
  else console.error('sluice example: could not start:', error);
  process.exitCode = 1;
});
