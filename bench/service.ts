/**
 * `npm run bench:service [-- --json] [-- --routes read,write] [-- --seconds 4] [-- --write-seconds 3]
 *   [-- --rounds 3] [-- --concurrency 1,10,100] [-- --delay-ms 1] [-- --pool-max 10] [-- --warmup 1]
 *   [-- --client autocannon|retry-after]`
 *
 * The example service (examples/service, on sluice) under HTTP load, side by side with the
 * same routes built on Kysely's own PostgresDialect over pg.Pool (bench/service-baseline.ts):
 * for each route and each number of concurrent HTTP clients, the latency of the requests
 * *served* (2xx), and how many were shed (503), timed out (504) or failed. The question:
 * does the served p99 stay near its unloaded value at 10x the pool's capacity (sluice sheds
 * what it cannot serve soon), while the baseline's grows with its queue? Each route has a
 * table section and a verdict of its own (served p99 at the most connections / at the
 * fewest, for each server).
 *
 * The setup, and why:
 * - PostgreSQL: SLUICE_PG_URL, else postgres://postgres@127.0.0.1:5432/test (as bench/db.ts);
 *   the benchmark creates and uses the database `sluice_bench_service` next to it, applies
 *   the service's own migrations, and seeds 1,000 authors, 10,000 posts (2 tags each, 3
 *   comments each) with bulk SQL, once (reused while the counts match).
 * - Routes (--routes, default both), each request on a random post of the 10,000:
 *   - read: GET /posts/:id: post + author + tags + comments, 4 queries one after the other
 *     on one connection (the service's `database.withConnection`, the baseline's
 *     `db.connection()`): one wait for a connection per request, on both;
 *   - write: POST /posts/:id/comments: one transaction that holds one connection for 4
 *     round trips (BEGIN; INSERT the comment RETURNING *; UPDATE posts SET comment_count =
 *     comment_count + 1; COMMIT), a 404 for a post that does not exist, run again (3 tries
 *     in all) on a deadlock or serialization failure. Random posts, not one: writes to one
 *     hot post would queue on its row lock and measure PostgreSQL, not the pool. (An
 *     INSERT's foreign-key check takes KEY SHARE on the post, which the UPDATE's lock does
 *     not conflict with: two writes to the same post wait, they do not deadlock.)
 *   Both servers send the same statements, validate with the same schemas and answer the
 *   same JSON: the benchmark checks a few ids before measuring (for the write, each server
 *   comments on the same posts, both answer alike but for the comment's id and time, a
 *   missing post is the same 404, and both then read back the comment count raised by both).
 * - All the read route's rounds run first, then the write route's, whatever --routes says:
 *   the reads see the seeded rows (3 comments a post), as before the write route existed,
 *   not a table the writes grow during the run.
 * - The database stays the same run after run: the comments written (by the checks, and by
 *   the write route: some tens of thousands) are deleted once the route is done and the
 *   database quiet (requests in flight when the load stopped still commit: the baseline's
 *   queue drains for a while), every comment_count set back from the rows, and the two
 *   tables VACUUMed; a run cut short is cleaned up the same way when the next one starts.
 *   Before that clean-up, the benchmark counts the posts whose comment_count no longer
 *   matches their comments: it must be 0 (each write adds its comment and its count
 *   together or neither, 503s and 504s included); it prints the count, and exits 1 if it
 *   is not.
 * - Each server, each proxy, is a child process of its own (`node --import tsx`), so the
 *   load generator (autocannon, in this process) shares no event loop with them. Both
 *   servers run the whole time, idle while the other is measured; each cell alternates which
 *   server goes first from round to round.
 * - The service runs as `npm start` runs it (examples/service/src/main.ts): POOL_MAX=10 and
 *   its defaults otherwise (POOL_MAX_WAITING = POOL_MAX, REQUEST_TIMEOUT_MS = 5000),
 *   LOG_LEVEL=warn. Its /metrics bookkeeping (a histogram per request and per query) is
 *   part of the service and stays on. The baseline: pg.Pool max 10, no deadline, no
 *   shedding, Fastify's logger at warn too.
 * - The database a network hop away: a local PostgreSQL answers these lookups in ~0.1 ms,
 *   so without help the Node process runs out of CPU long before 10 connections are busy,
 *   and no queue for a connection ever forms (there would be nothing to shed). Each server
 *   reaches PostgreSQL through its own TCP proxy (test/integration/tcp-proxy.ts with
 *   `delayMs`, in a child process, bench/delay-proxy.ts) that delays every chunk each way
 *   by --delay-ms (default 1), as a managed database in the same region would. Node's
 *   timers fire on a millisecond clock, so the real added delay is somewhat more than asked:
 *   the header prints the measured SELECT 1 round trip through the proxy, and it is the
 *   same proxy for both servers.
 * - Load: autocannon, closed loop (each connection sends its next request as soon as the
 *   last is answered, 503s included), --concurrency connections per cell after --warmup s
 *   of the same load; --rounds rounds of --seconds s per cell for the read route, of
 *   --write-seconds s (3, not 4) for the write route, to keep a default run near 3 minutes
 *   (the read route alone took 1:45). A closed loop is what autocannon does; note it means
 *   a shed client comes straight back (a real client would honour Retry-After). The table
 *   shows each process's CPU so the cost of answering 503s is visible rather than hidden.
 * - Latency: autocannon's per-response time (from writing the request to the end of the
 *   response), split by status: the p50/p99 of 2xx only; 503s, 504s and the rest counted.
 *   Cells pool the responses of all rounds.
 * - Also shown, to explain the latencies rather than to judge: each process's CPU (/proc),
 *   and the event-loop lag p99 of the server and of the load generator (the worst round;
 *   monitorEventLoopDelay, sampled every 10 ms, bench/child-harness.ts in the children).
 * - `--client retry-after` swaps autocannon for clients that wait out a 503's Retry-After
 *   (see politeLoad): how the service does when shed clients back off, for comparison.
 * - Variables of the service other than those above pass through from this process's
 *   environment: `POOL_MAX_WAITING=90 npm run bench:service` runs it without shedding at
 *   100 connections, say.
 *
 * Compare ratios: the machine is shared and noisy (2 cores here for the load generator,
 * both servers, both proxies and PostgreSQL).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { dirname, join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual } from 'node:util';
import autocannon from 'autocannon';
import pg from 'pg';
import { connect, migrate } from 'sluice';
import { migrationProvider } from '../examples/service/src/migrations.js';
import type { DB } from '../examples/service/src/schema.js';
import { benchArgs, formatTable } from './measure.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const PG_URL = process.env.SLUICE_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const DB_NAME = 'sluice_bench_service';
const AUTHORS = 1_000;
const POSTS = 10_000;
const TAGS = 50;
const COMMENTS_PER_POST = 3;

const args = benchArgs(
  { seconds: '4', concurrency: '1,10,100' },
  { 'delay-ms': '1', 'pool-max': '10', warmup: '1', client: 'autocannon', routes: 'read,write', 'write-seconds': '3' },
);
const DELAY_MS = Number(args.extra['delay-ms']);
const POOL_MAX = Number(args.extra['pool-max']);
const WARMUP_S = Number(args.extra['warmup']);
/** `autocannon` (default), or `retry-after`: see politeLoad. */
const CLIENT = String(args.extra['client']);
if (CLIENT !== 'autocannon' && CLIENT !== 'retry-after') throw new Error('--client: autocannon or retry-after');

// ---------------------------------------------------------------------------------------
// The routes benched.

type RouteName = 'read' | 'write';

interface Route {
  readonly name: RouteName;
  /** What the table's section says it is. */
  readonly title: string;
  readonly method: 'GET' | 'POST';
  /** Seconds measured per cell per round. */
  readonly seconds: number;
  /** The next request: a random post each time. */
  next(): { path: string; body?: string };
}

const randomPost = (): number => 1 + Math.floor(Math.random() * POSTS);
const COMMENT = JSON.stringify({ commenter: 'bench reader', body: 'A comment the benchmark wrote (removed at the end of the run).' });
const ROUTES: Record<RouteName, Route> = {
  read: {
    name: 'read',
    title: 'GET /posts/:id (4 queries on one connection)',
    method: 'GET',
    seconds: args.seconds,
    next: () => ({ path: `/posts/${randomPost()}` }),
  },
  write: {
    name: 'write',
    title: 'POST /posts/:id/comments (1 transaction on 1 connection: BEGIN, INSERT, UPDATE, COMMIT)',
    method: 'POST',
    seconds: Number(args.extra['write-seconds']),
    next: () => ({ path: `/posts/${randomPost()}/comments`, body: COMMENT }),
  },
};
/** Always read before write, whatever the order asked: the reads then see the seeded rows (see the header). */
const routes: Route[] = (() => {
  const asked = String(args.extra['routes']).split(',').map((name) => name.trim()).filter((name) => name !== '');
  for (const name of asked) if (!(name in ROUTES)) throw new Error(`--routes: read, write or both (read,write), not ${name}`);
  if (asked.length === 0) throw new Error('--routes: read, write or both (read,write)');
  return (['read', 'write'] as const).filter((name) => asked.includes(name)).map((name) => ROUTES[name]);
})();

function databaseUrl(base: string, name: string, hostPort?: { host: string; port: number }): string {
  const url = new URL(base);
  url.pathname = `/${name}`;
  if (hostPort !== undefined) {
    url.hostname = hostPort.host;
    url.port = String(hostPort.port);
  }
  return url.toString();
}

// ---------------------------------------------------------------------------------------
// The database: created if missing, migrated by the service's migrations, seeded once.

async function prepareDatabase(): Promise<void> {
  const admin = new pg.Client({ connectionString: PG_URL });
  await admin.connect();
  const { rowCount } = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [DB_NAME]);
  if (rowCount === 0) await admin.query(`CREATE DATABASE ${DB_NAME}`);
  await admin.end();

  const url = databaseUrl(PG_URL, DB_NAME);
  const database = connect<DB>(url, { pool: { max: 2 } });
  try {
    await migrate(database, { provider: migrationProvider('postgres') });
  } finally {
    await database.close();
  }

  // Put back what an earlier run cut short left behind (see resetComments).
  const left = await resetComments();
  if ((left.removed > 0 || left.inconsistentPosts > 0) && !args.json) {
    console.log(`${DB_NAME}: removed ${left.removed} comment(s) an earlier run left behind; repaired ${left.inconsistentPosts} comment_count(s)`);
  }

  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const counts = await client.query<{ authors: number; posts: number; post_tags: number; comments: number }>(
      `SELECT (SELECT count(*)::int FROM authors) AS authors, (SELECT count(*)::int FROM posts) AS posts,
              (SELECT count(*)::int FROM post_tags) AS post_tags, (SELECT count(*)::int FROM comments) AS comments`,
    );
    const c = counts.rows[0]!;
    if (c.authors === AUTHORS && c.posts === POSTS && c.post_tags === 2 * POSTS && c.comments === COMMENTS_PER_POST * POSTS) return;
    const started = performance.now();
    await client.query('BEGIN');
    await client.query('TRUNCATE post_tags, tags, comments, posts, authors RESTART IDENTITY CASCADE');
    await client.query(
      `INSERT INTO authors (id, name, email) SELECT g, 'Author ' || g, 'author' || g || '@example.com' FROM generate_series(1, ${AUTHORS}) AS g`,
    );
    await client.query(`INSERT INTO tags (id, name) SELECT g, 'tag-' || g FROM generate_series(1, ${TAGS}) AS g`);
    await client.query(
      `INSERT INTO posts (id, author_id, title, slug, body, comment_count)
       SELECT g, 1 + g % ${AUTHORS}, 'Post number ' || g, 'post-number-' || g,
              repeat('Lorem ipsum dolor sit amet, consectetur adipiscing elit. ', 6) || E'\\n' || 'The rest of post ' || g || '.',
              ${COMMENTS_PER_POST}
       FROM generate_series(1, ${POSTS}) AS g`,
    );
    await client.query(
      `INSERT INTO post_tags (post_id, tag_id)
       SELECT g, 1 + g % ${TAGS} FROM generate_series(1, ${POSTS}) AS g
       UNION ALL SELECT g, 1 + (g + 17) % ${TAGS} FROM generate_series(1, ${POSTS}) AS g`,
    );
    await client.query(
      `INSERT INTO comments (post_id, commenter, body)
       SELECT 1 + (g - 1) / ${COMMENTS_PER_POST}, 'reader ' || g % 97, 'Comment ' || g || ': thanks for writing this.'
       FROM generate_series(1, ${COMMENTS_PER_POST * POSTS}) AS g`,
    );
    for (const table of ['authors', 'tags', 'posts', 'comments']) {
      await client.query(`SELECT setval(pg_get_serial_sequence('${table}', 'id'), (SELECT max(id) FROM ${table}))`);
    }
    await client.query('COMMIT');
    await client.query('ANALYZE');
    if (!args.json) console.log(`seeded ${DB_NAME} in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  } finally {
    await client.end();
  }
}

/**
 * Removes the comments added since the seed (ids past its COMMENTS_PER_POST * POSTS: the
 * write route's, the checks', an interrupted run's) and makes every comment_count match its
 * rows again, then VACUUMs if anything was removed, so the next run reads and writes the
 * same tables. Answers what it found *before* repairing: the comments removed, and the
 * posts whose comment_count did not match their rows (0 unless a server broke a
 * transaction: each write adds its comment and the count together, or neither).
 */
async function resetComments(): Promise<{ removed: number; inconsistentPosts: number }> {
  const client = new pg.Client({ connectionString: databaseUrl(PG_URL, DB_NAME) });
  await client.connect();
  try {
    const countMismatch = `comment_count <> (SELECT count(*) FROM comments c WHERE c.post_id = p.id)`;
    const { rows } = await client.query<{ n: number }>(`SELECT count(*)::int AS n FROM posts p WHERE ${countMismatch}`);
    await client.query('BEGIN');
    const removed = (await client.query(`DELETE FROM comments WHERE id > ${COMMENTS_PER_POST * POSTS}`)).rowCount ?? 0;
    await client.query(`UPDATE posts p SET comment_count = (SELECT count(*) FROM comments c WHERE c.post_id = p.id) WHERE ${countMismatch}`);
    await client.query('COMMIT');
    if (removed > 0) await client.query('VACUUM ANALYZE comments, posts');
    return { removed, inconsistentPosts: rows[0]!.n };
  } finally {
    await client.end();
  }
}

/**
 * Waits until nothing writes to the database any more: when autocannon stops, the
 * requests in flight still run (the baseline's pg.Pool queue drains for a few hundred ms
 * after a 100-connection cell), and a comment committed while resetComments runs would be
 * miscounted (its UPDATE would set a count from a snapshot without it). Quiet: no client
 * backend of the database but this one in a statement or a transaction, and the last
 * comment id unchanged, for a whole second.
 */
async function waitUntilQuiet(): Promise<void> {
  const client = new pg.Client({ connectionString: databaseUrl(PG_URL, DB_NAME) });
  await client.connect();
  try {
    const giveUpAt = performance.now() + 30_000;
    let last = '';
    let quietSince = performance.now();
    for (;;) {
      const { rows } = await client.query<{ busy: number; last: number }>(
        `SELECT (SELECT count(*)::int FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend'
                   AND pid <> pg_backend_pid() AND state <> 'idle') AS busy,
                (SELECT coalesce(max(id), 0)::int FROM comments) AS last`,
      );
      const now = `${rows[0]!.busy}/${rows[0]!.last}`;
      if (rows[0]!.busy !== 0 || now !== last) {
        last = now;
        quietSince = performance.now();
      } else if (performance.now() - quietSince >= 1_000) {
        return;
      }
      if (performance.now() > giveUpAt) throw new Error(`${DB_NAME}: still written to 30 s after the write route ended (${now})`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  } finally {
    await client.end();
  }
}

// ---------------------------------------------------------------------------------------
// Child processes: started with a pipe as stdin (bench/child-harness.ts ends them when it
// closes), stopped with SIGTERM then SIGKILL, all of them also on error and on SIGINT.

interface Child {
  readonly name: string;
  readonly process: ChildProcess;
  readonly pid: number;
  /** The last lines it printed, for an error message. */
  readonly tail: string[];
}

const children = new Set<Child>();

function startChild(name: string, script: string, scriptArgs: string[], env: Record<string, string>, ready: RegExp): Promise<{ child: Child; match: RegExpMatchArray }> {
  const proc = spawn(process.execPath, ['--import', 'tsx', '--import', './bench/child-harness.ts', script, ...scriptArgs], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['pipe', 'pipe', 'pipe', 'ipc'],
  });
  const child: Child = { name, process: proc, pid: proc.pid!, tail: [] };
  children.add(child);
  proc.once('exit', () => children.delete(child));
  return new Promise((resolve, reject) => {
    let settled = false;
    const timer = setTimeout(() => fail(new Error(`${name}: not ready after 60 s`)), 60_000);
    const fail = (error: Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(new Error(`${error.message}\n${child.tail.join('\n')}`));
    };
    const onLine = (line: string): void => {
      child.tail.push(line);
      if (child.tail.length > 30) child.tail.shift();
      const match = settled ? null : line.match(ready);
      if (match !== null) {
        settled = true;
        clearTimeout(timer);
        resolve({ child, match });
      }
    };
    createInterface({ input: proc.stdout! }).on('line', onLine);
    createInterface({ input: proc.stderr! }).on('line', onLine);
    proc.once('exit', (code, signal) => fail(new Error(`${name}: exited (${signal ?? code}) before it was ready`)));
    proc.once('error', fail);
  });
}

async function stopChild(child: Child): Promise<void> {
  if (child.process.exitCode !== null || child.process.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.process.once('exit', () => resolve()));
  child.process.kill('SIGTERM');
  const timer = setTimeout(() => child.process.kill('SIGKILL'), 5_000);
  await exited;
  clearTimeout(timer);
}

const stopAll = (): Promise<unknown> => Promise.all([...children].map(stopChild));
process.once('exit', () => {
  for (const child of children) child.process.kill('SIGKILL');
});
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => void stopAll().then(() => process.exit(130)));
}

interface LoopDelay {
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
}

/** A child's event-loop delay since the last call (bench/child-harness.ts answers). */
function childLoopDelay(child: Child): Promise<LoopDelay> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.process.off('message', onMessage);
      reject(new Error(`${child.name}: no answer about its event loop`));
    }, 10_000);
    const onMessage = (message: unknown): void => {
      const answer = message as { loopDelay?: LoopDelay };
      if (answer.loopDelay === undefined) return;
      clearTimeout(timer);
      child.process.off('message', onMessage);
      resolve(answer.loopDelay);
    };
    child.process.on('message', onMessage);
    child.process.send('loop-delay?');
  });
}

/** This process's (the load generator's) event-loop delay, the same way. */
const ownLoopDelay = monitorEventLoopDelay({ resolution: 10 });
ownLoopDelay.enable();

/** CPU seconds a process has used (user + system), from /proc. */
function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100; // USER_HZ is 100 on Linux
  } catch {
    return NaN;
  }
}

const ownCpuSeconds = (): number => {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1e6;
};

// ---------------------------------------------------------------------------------------
// Servers.

interface Server {
  readonly name: string;
  readonly url: string;
  readonly server: Child;
  readonly proxy: Child;
}

async function startProxy(name: string): Promise<{ child: Child; port: number }> {
  const target = new URL(PG_URL);
  const { child, match } = await startChild(
    `${name} proxy`,
    'bench/delay-proxy.ts',
    [target.hostname, target.port || '5432', String(DELAY_MS)],
    {},
    /^delay-proxy: listening on 127\.0\.0\.1:(\d+)/,
  );
  return { child, port: Number(match[1]) };
}

async function startServer(name: string, script: string, ready: RegExp): Promise<Server> {
  const proxy = await startProxy(name);
  const { child, match } = await startChild(
    name,
    script,
    [],
    {
      DATABASE_URL: databaseUrl(PG_URL, DB_NAME, { host: '127.0.0.1', port: proxy.port }),
      PORT: '0',
      HOST: '127.0.0.1',
      POOL_MAX: String(POOL_MAX),
      LOG_LEVEL: 'warn',
    },
    ready,
  );
  return { name, url: match[1]!, server: child, proxy: proxy.child };
}

/** SELECT 1 round trips, direct and through a proxy like the servers', for the header. */
async function roundTrips(proxyPort: number): Promise<{ directMs: number; proxiedMs: number }> {
  const time = async (url: string): Promise<number> => {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    const samples: number[] = [];
    for (let i = 0; i < 200; i++) {
      const start = performance.now();
      await client.query('SELECT 1');
      if (i >= 20) samples.push(performance.now() - start);
    }
    await client.end();
    return quantile(samples.sort((a, b) => a - b), 0.5);
  };
  return {
    directMs: await time(databaseUrl(PG_URL, DB_NAME)),
    proxiedMs: await time(databaseUrl(PG_URL, DB_NAME, { host: '127.0.0.1', port: proxyPort })),
  };
}

/** Both servers must answer the same JSON: checked on a few posts before measuring. */
async function checkSameAnswers(servers: readonly Server[]): Promise<void> {
  for (const id of [1, 2, 777, POSTS]) {
    const bodies = await Promise.all(
      servers.map(async (server) => {
        const response = await fetch(`${server.url}/posts/${id}`);
        if (response.status !== 200) throw new Error(`${server.name}: GET /posts/${id} answered ${response.status}`);
        return response.json();
      }),
    );
    if (!isDeepStrictEqual(bodies[0], bodies[1])) {
      throw new Error(`GET /posts/${id}: the servers answer differently:\n${JSON.stringify(bodies[0])}\n${JSON.stringify(bodies[1])}`);
    }
  }
}

/**
 * The same for the write route: each server adds a comment to a few posts (201, the same
 * JSON but for the new comment's id and time; a 404 alike for a post that does not exist),
 * and then each server reads back the post with both comments and its comment count
 * raised by both (the GET check above).
 */
async function checkSameWrites(servers: readonly Server[]): Promise<void> {
  const post = async (server: Server, id: number): Promise<{ status: number; body: Record<string, unknown> }> => {
    const response = await fetch(`${server.url}/posts/${id}/comments`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: COMMENT });
    return { status: response.status, body: (await response.json()) as Record<string, unknown> };
  };
  const ids = [1, 2, 777, POSTS];
  for (const id of ids) {
    const answers = [];
    for (const server of servers) answers.push(await post(server, id));
    const [a, b] = answers.map(({ status, body }) => {
      const { id: commentId, createdAt, ...rest } = body;
      if (status !== 201 || !Number.isInteger(commentId) || typeof createdAt !== 'string' || Number.isNaN(Date.parse(createdAt))) {
        throw new Error(`POST /posts/${id}/comments answered ${status} ${JSON.stringify(body)}`);
      }
      return rest;
    });
    if (!isDeepStrictEqual(a, b)) throw new Error(`POST /posts/${id}/comments: the servers answer differently:\n${JSON.stringify(a)}\n${JSON.stringify(b)}`);
  }
  const missing = await Promise.all(servers.map((server) => post(server, POSTS + 1)));
  if (missing.some((answer) => answer.status !== 404) || !isDeepStrictEqual(missing[0], missing[1])) {
    throw new Error(`POST /posts/${POSTS + 1}/comments (no such post): ${JSON.stringify(missing)}`);
  }
  await checkSameAnswers(servers);
  for (const id of ids) {
    const read = (await (await fetch(`${servers[0]!.url}/posts/${id}`)).json()) as { commentCount: number; comments: unknown[] };
    if (read.commentCount !== read.comments.length || read.commentCount !== COMMENTS_PER_POST + servers.length) {
      throw new Error(`GET /posts/${id} after the writes: commentCount ${read.commentCount}, ${read.comments.length} comments`);
    }
  }
}

// ---------------------------------------------------------------------------------------
// Load.

interface Cell {
  readonly route: RouteName;
  readonly server: string;
  readonly connections: number;
  seconds: number;
  served: number[];
  shed: number;
  timedOut504: number;
  otherStatus: number;
  errors: number;
  serverCpu: number;
  proxyCpu: number;
  loadgenCpu: number;
  /** Event-loop lag p99 of each run (over the 10 ms sampling tick), ms. */
  serverLoopP99: number[];
  loadgenLoopP99: number[];
}

function quantile(sorted: readonly number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;
}

/**
 * `--client retry-after`, an experiment rather than the benchmark: `connections` closed-loop
 * clients on Node's http with keep-alive, each of which, answered 503, waits the
 * Retry-After it was given before its next request, as a well-behaved client would.
 * Much slower per request than autocannon, but the load here is hundreds of req/s.
 */
async function politeLoad(route: Route, url: string, connections: number, seconds: number, cell?: Cell): Promise<void> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: connections });
  const stopAt = performance.now() + seconds * 1000;
  const send = ({ path, body }: { path: string; body?: string }): Promise<{ status: number; retryAfter: number }> =>
    new Promise((resolve, reject) => {
      const headers = body === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) };
      http
        .request(`${url}${path}`, { agent, method: route.method, headers }, (response) => {
          response.resume();
          response.on('end', () => resolve({ status: response.statusCode ?? 0, retryAfter: Number(response.headers['retry-after'] ?? 1) }));
        })
        .on('error', reject)
        .end(body);
    });
  await Promise.all(
    Array.from({ length: connections }, async () => {
      while (performance.now() < stopAt) {
        const start = performance.now();
        try {
          const { status, retryAfter } = await send(route.next());
          const ms = performance.now() - start;
          if (status >= 200 && status < 300) cell?.served.push(ms);
          else if (status === 503) {
            if (cell !== undefined) cell.shed++;
            await new Promise((resolve) => setTimeout(resolve, Math.min(retryAfter * 1000, Math.max(0, stopAt - performance.now()))));
          } else if (status === 504) {
            if (cell !== undefined) cell.timedOut504++;
          } else if (cell !== undefined) cell.otherStatus++;
        } catch {
          if (cell !== undefined) cell.errors++;
        }
      }
    }),
  );
  agent.destroy();
}

/** One autocannon run of the route's requests (a random post each), `connections` at a time, closed loop. */
function load(route: Route, url: string, connections: number, seconds: number, cell?: Cell): Promise<void> {
  if (CLIENT === 'retry-after') return politeLoad(route, url, connections, seconds, cell);
  return new Promise((resolve, reject) => {
    const instance = autocannon(
      {
        url,
        connections,
        duration: seconds,
        timeout: 30,
        requests: [
          {
            method: route.method,
            ...(route.method === 'POST' ? { headers: { 'content-type': 'application/json' } } : {}),
            setupRequest: (request) => ({ ...request, ...route.next() }),
          },
        ],
      },
      (error) => (error ? reject(error) : resolve()),
    );
    if (cell === undefined) return;
    instance.on('response', (_client, statusCode, _bytes, ms) => {
      if (statusCode >= 200 && statusCode < 300) cell.served.push(ms);
      else if (statusCode === 503) cell.shed++;
      else if (statusCode === 504) cell.timedOut504++;
      else cell.otherStatus++;
    });
    instance.on('reqError', () => cell.errors++);
  });
}

async function measureCell(route: Route, server: Server, cell: Cell): Promise<void> {
  await load(route, server.url, cell.connections, WARMUP_S);
  await childLoopDelay(server.server);
  ownLoopDelay.reset();
  const before = { server: cpuSeconds(server.server.pid), proxy: cpuSeconds(server.proxy.pid), own: ownCpuSeconds(), at: performance.now() };
  await load(route, server.url, cell.connections, route.seconds, cell);
  const elapsed = (performance.now() - before.at) / 1000;
  cell.seconds += elapsed;
  cell.serverCpu += cpuSeconds(server.server.pid) - before.server;
  cell.proxyCpu += cpuSeconds(server.proxy.pid) - before.proxy;
  cell.loadgenCpu += ownCpuSeconds() - before.own;
  // Node's histogram counts the 10 ms sampling tick in each delay: what is over it is the lag.
  cell.serverLoopP99.push(Math.max(0, (await childLoopDelay(server.server)).p99Ms - 10));
  cell.loadgenLoopP99.push(Math.max(0, ownLoopDelay.percentile(99) / 1e6 - 10));
}

// ---------------------------------------------------------------------------------------

async function main(): Promise<void> {
  await prepareDatabase();
  const sluice = await startServer('sluice service', 'examples/service/src/main.ts', /listening on (http:\/\/\S+)/);
  const baseline = await startServer('kysely + pg.Pool', 'bench/service-baseline.ts', /^baseline: listening on (http:\/\/\S+)/);
  const servers = [sluice, baseline];
  await checkSameAnswers(servers);
  if (routes.some((route) => route.name === 'write')) {
    await checkSameWrites(servers);
    await resetComments(); // the checks' comments: the reads measure the seeded rows
  }
  const probe = await startProxy('probe');
  const rtt = await roundTrips(probe.port);
  await stopChild(probe.child);

  const cells = new Map<string, Cell>();
  const cellOf = (route: Route, server: Server, connections: number): Cell => {
    const key = `${route.name}/${server.name}/${connections}`;
    let cell = cells.get(key);
    if (cell === undefined) {
      cell = { route: route.name, server: server.name, connections, seconds: 0, served: [], shed: 0, timedOut504: 0, otherStatus: 0, errors: 0, serverCpu: 0, proxyCpu: 0, loadgenCpu: 0, serverLoopP99: [], loadgenLoopP99: [] };
      cells.set(key, cell);
    }
    return cell;
  };
  /** What the write route left in the database, found before it was put back (resetComments). */
  let written: { removed: number; inconsistentPosts: number } | undefined;
  for (const route of routes) {
    for (let round = 0; round < args.rounds; round++) {
      for (const connections of args.levels) {
        const order = round % 2 === 0 ? servers : [...servers].reverse();
        for (const server of order) {
          if (!args.json) process.stderr.write(`${route.name}, round ${round + 1}/${args.rounds}: ${server.name}, ${connections} connections\n`);
          await measureCell(route, server, cellOf(route, server, connections));
        }
      }
    }
    if (route.name === 'write') {
      await waitUntilQuiet();
      written = await resetComments();
    }
  }

  const rank = <T>(list: readonly T[], item: T): number => list.indexOf(item);
  const results = [...cells.values()]
    .sort(
      (a, b) =>
        rank(routes.map((r) => r.name), a.route) - rank(routes.map((r) => r.name), b.route) ||
        rank(servers.map((s) => s.name), a.server) - rank(servers.map((s) => s.name), b.server) ||
        a.connections - b.connections,
    )
    .map((cell) => {
      const sorted = [...cell.served].sort((a, b) => a - b);
      const total = cell.served.length + cell.shed + cell.timedOut504 + cell.otherStatus + cell.errors;
      return {
        route: cell.route,
        server: cell.server,
        connections: cell.connections,
        servedPerSec: cell.served.length / cell.seconds,
        p50Ms: quantile(sorted, 0.5),
        p99Ms: quantile(sorted, 0.99),
        served: cell.served.length,
        shed: cell.shed,
        shedPct: total === 0 ? 0 : (100 * cell.shed) / total,
        timedOut504: cell.timedOut504,
        otherStatus: cell.otherStatus,
        errors: cell.errors,
        serverCpuPct: (100 * cell.serverCpu) / cell.seconds,
        proxyCpuPct: (100 * cell.proxyCpu) / cell.seconds,
        loadgenCpuPct: (100 * cell.loadgenCpu) / cell.seconds,
        serverLoopP99Ms: Math.max(...cell.serverLoopP99),
        loadgenLoopP99Ms: Math.max(...cell.loadgenLoopP99),
      };
    });
  type Result = (typeof results)[number];
  const unloaded = (route: RouteName, server: string): number => {
    const own = results.filter((r) => r.route === route && r.server === server);
    return own.reduce((least, r) => (r.connections < least.connections ? r : least), own[0]!).p99Ms;
  };
  const ratio = (r: Result): number => r.p99Ms / unloaded(r.route, r.server);
  const most = Math.max(...args.levels);
  const TARGET = 3;
  const verdicts = routes.map((route) => {
    const at = (server: Server): number => ratio(results.find((r) => r.route === route.name && r.server === server.name && r.connections === most)!);
    const s = at(sluice);
    return { route: route.name, connections: most, sluiceP99VsUnloaded: s, baselineP99VsUnloaded: at(baseline), target: TARGET, met: s <= TARGET };
  });
  const config = {
    poolMax: POOL_MAX,
    delayMs: DELAY_MS,
    rttDirectMs: rtt.directMs,
    rttProxiedMs: rtt.proxiedMs,
    rounds: args.rounds,
    warmupS: WARMUP_S,
    posts: POSTS,
    client: CLIENT,
    routes: routes.map((route) => ({ route: route.name, title: route.title, seconds: route.seconds })),
  };
  const database = written === undefined ? undefined : { commentsRemoved: written.removed, inconsistentPosts: written.inconsistentPosts };
  if (written !== undefined && written.inconsistentPosts > 0) process.exitCode = 1;

  if (args.json) {
    process.stdout.write(`${JSON.stringify({ config, results: results.map((r) => ({ ...r, p99VsUnloaded: ratio(r) })), verdicts, ...(database ? { database } : {}) })}\n`);
    return;
  }
  if (CLIENT !== 'autocannon') console.log(`load: ${CLIENT} clients (an experiment, not the benchmark's autocannon)`);
  console.log(
    `pool max ${POOL_MAX}; PostgreSQL behind a proxy adding ${DELAY_MS} ms each way ` +
      `(SELECT 1 round trip p50: ${rtt.proxiedMs.toFixed(2)} ms through it, ${rtt.directMs.toFixed(2)} ms direct); ` +
      `${args.rounds} round(s) per cell after ${WARMUP_S} s warm-up each, pooled; a random post of ${POSTS} per request. Compare ratios.`,
  );
  const f = (n: number, digits = 1): string => (Number.isFinite(n) ? n.toFixed(digits) : '-');
  for (const route of routes) {
    const verdict = verdicts.find((v) => v.route === route.name)!;
    console.log(`\n${route.name}: ${route.title}, ${route.seconds} s per round`);
    console.log(
      formatTable(
        ['server', 'conns', 'served/s', 'p50 ms', 'p99 ms', 'p99 vs c=1', 'shed 503', 'shed %', '504', 'other', 'errors', 'srv CPU%', 'proxy CPU%', 'loadgen CPU%', 'srv lag p99', 'loadgen lag p99'],
        results
          .filter((r) => r.route === route.name)
          .map((r) => [
            r.server,
            String(r.connections),
            f(r.servedPerSec, 0),
            f(r.p50Ms, 2),
            f(r.p99Ms, 2),
            `${f(ratio(r), 2)}x`,
            String(r.shed),
            f(r.shedPct),
            String(r.timedOut504),
            String(r.otherStatus),
            String(r.errors),
            f(r.serverCpuPct, 0),
            f(r.proxyCpuPct, 0),
            f(r.loadgenCpuPct, 0),
            f(r.serverLoopP99Ms, 1),
            f(r.loadgenLoopP99Ms, 1),
          ]),
        1,
      ),
    );
    console.log(
      `${route.name} verdict at ${most} connections (${most / POOL_MAX}x the pool): sluice served p99 / its unloaded p99 = ${f(verdict.sluiceP99VsUnloaded, 2)}x ` +
        `(target <= ${TARGET}x: ${verdict.met ? 'met' : 'MISSED'}); baseline = ${f(verdict.baselineP99VsUnloaded, 2)}x.`,
    );
    if (route.name === 'write' && written !== undefined) {
      console.log(
        written.inconsistentPosts === 0
          ? `write: comment_count matched its rows on all ${POSTS} posts after the run; the run's ${written.removed} comments removed again.`
          : `write: comment_count did NOT match its rows on ${written.inconsistentPosts} post(s) after the run (a transaction half applied?); repaired, and the run's ${written.removed} comments removed.`,
      );
    }
  }
}

try {
  await main();
} finally {
  await stopAll();
}
