// pg-pool ships no types; the benchmark uses this much of it.
declare module 'pg-pool' {
  import type { EventEmitter } from 'node:events';

  interface PoolClient {
    release(error?: Error | boolean): void;
  }

  interface PgPoolOptions {
    readonly Client: new (options: unknown) => EventEmitter;
    readonly max: number;
    readonly connectionTimeoutMillis?: number;
    readonly idleTimeoutMillis?: number;
  }

  export default class PgPool<C extends PoolClient = PoolClient> {
    constructor(options: PgPoolOptions);
    connect(): Promise<C>;
    end(): Promise<void>;
  }
}
