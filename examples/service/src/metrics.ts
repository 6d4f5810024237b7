/**
 * What the service exposes at `GET /metrics`, in Prometheus' text format (prom-client):
 * the pool (size, in use, idle, waiting, and its running totals: timeouts, shed
 * acquires...), query latency, request latency by route and status, and Node's own
 * metrics (event-loop lag among them).
 */
import type { LogEvent } from 'kysely';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { type Database, type PoolStats, type PoolTotals, QueryTimeoutError } from 'sluice';

/** Seconds: from a fast PK lookup to a request near its deadline. */
const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export interface ServiceMetrics {
  readonly registry: Registry;
  /** Kysely's `log` hook (`connect(url, { log })`): times every query. */
  readonly queryLog: (event: LogEvent) => void;
  /** Reads the pool's stats at each scrape, and times each wait for a connection. */
  observePool(database: Pick<Database<unknown>, 'pool'>): void;
  /** A request refused at the door because the pool's queue was full. */
  countShed(): void;
  observeRequest(labels: { readonly method: string; readonly route: string; readonly status: number }, seconds: number): void;
}

export function createMetrics(): ServiceMetrics {
  // A registry of its own, not prom-client's global one: two services in one process
  // (the tests) must not share or clash.
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });

  const queries = new Histogram({
    name: 'sluice_query_duration_seconds',
    help: 'Time from sending a query to its result or error, by outcome.',
    labelNames: ['outcome'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [registry],
  });
  const queryTimeouts = new Counter({
    name: 'sluice_query_timeouts_total',
    help: 'Queries stopped (on the server) because their request deadline passed.',
    registers: [registry],
  });
  const poolWait = new Histogram({
    name: 'sluice_pool_wait_seconds',
    help: 'Time a query waited for a connection (0 when one was idle).',
    buckets: [0, ...LATENCY_BUCKETS],
    registers: [registry],
  });
  const shed = new Counter({
    name: 'http_requests_shed_total',
    help: "Requests answered 503 at the door because the pool's queue was full (load shedding).",
    registers: [registry],
  });
  const requests = new Histogram({
    name: 'http_request_duration_seconds',
    help: 'Time to answer a request, by method, route and status.',
    labelNames: ['method', 'route', 'status'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [registry],
  });

  return {
    registry,
    queryLog(event) {
      const seconds = event.queryDurationMillis / 1000;
      if (event.level === 'query') {
        queries.observe({ outcome: 'ok' }, seconds);
        return;
      }
      queries.observe({ outcome: 'error' }, seconds);
      if (event.error instanceof QueryTimeoutError) queryTimeouts.inc();
    },
    observePool(database) {
      const pool = database.pool;
      pool.on('acquire', ({ waitedMs }) => poolWait.observe(waitedMs / 1000));
      const stat = (name: string, help: string, read: (stats: PoolStats) => number): void => {
        new Gauge({ name, help, registers: [registry], collect() { this.set(read(pool.stats())); } });
      };
      stat('sluice_pool_size', 'Open connections: idle + in use.', (s) => s.size);
      stat('sluice_pool_max', 'The most connections the pool opens.', (s) => s.max);
      stat('sluice_pool_in_use', 'Connections running a query or holding a transaction.', (s) => s.inUse);
      stat('sluice_pool_idle', 'Connections ready for the next query.', (s) => s.idle);
      stat('sluice_pool_waiting', 'Queries queued for a connection.', (s) => s.waiting);
      stat('sluice_pool_max_waiting', 'The most queries that may queue; beyond it the pool sheds load (-1: no bound).', (s) => (s.maxWaiting === Infinity ? -1 : s.maxWaiting));
      stat('sluice_pool_pending_creates', 'Connections being opened.', (s) => s.pendingCreates);
      const total = (name: string, help: string, key: keyof PoolTotals): void => {
        let reported = 0;
        new Counter({
          name,
          help,
          registers: [registry],
          collect() {
            const now = pool.stats().totals[key];
            this.inc(now - reported);
            reported = now;
          },
        });
      };
      total('sluice_pool_acquires_total', 'Connections handed out.', 'acquired');
      total('sluice_pool_timeouts_total', 'Waits for a connection that ran past their deadline.', 'timedOut');
      total('sluice_pool_aborts_total', 'Waits for a connection given up by their caller (a client that went away).', 'aborted');
      total('sluice_pool_shed_total', 'Waits refused at once because the queue was full (load shedding).', 'rejected');
      total('sluice_pool_connections_created_total', 'Connections opened.', 'created');
      total('sluice_pool_connections_destroyed_total', 'Connections closed.', 'destroyed');
      total('sluice_pool_create_errors_total', 'Failed attempts to open a connection.', 'createErrors');
    },
    countShed: () => shed.inc(),
    observeRequest(labels, seconds) {
      requests.observe({ method: labels.method, route: labels.route, status: String(labels.status) }, seconds);
    },
  };
}
