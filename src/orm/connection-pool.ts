import type { CancelSignal } from '../drivers/driver.js';
import { createPool, type Lease, type Pool, type PoolSettings } from '../pool/index.js';

/** What the pool needs of a driver's connection: the shape `DriverConnection` and `RedisConnection` share. */
export interface PooledDriverConnection {
  ping(options?: { readonly signal?: CancelSignal | undefined }): Promise<void>;
  /** Makes it safe for its next user (a transaction rolled back, a MULTI discarded); bounded by the driver. */
  reset(): Promise<void>;
  close(): Promise<void>;
  readonly broken: boolean;
  onBroken(listener: (error: unknown) => void): void;
}

/**
 * A pool of driver connections, as `connect()` and `connectRedis()` make theirs: `max` 10
 * unless set; a connection that breaks while idle is evicted; a checkout after idling is
 * validated with a ping; `isFatal` errors destroy the connection instead of returning it.
 */
export function connectionPool<C extends PooledDriverConnection>(
  open: (signal: AbortSignal) => Promise<C>,
  isFatal: (error: unknown) => boolean,
  settings: PoolSettings<C> | undefined,
): Pool<C> {
  const pool: Pool<C> = createPool<C>({
    max: 10,
    ...settings,
    create: async ({ signal }) => {
      const connection = await open(signal);
      connection.onBroken((error) => pool.evict(connection, error));
      return connection;
    },
    destroy: (connection) => connection.close(),
    validate: async (connection, { signal }) => {
      await connection.ping({ signal });
      return true;
    },
    isFatalError: (error) => isFatal(error),
  });
  return pool;
}

/**
 * Returns a connection to the pool clean (an open transaction rolled back, a MULTI
 * discarded, watched keys unwatched), or destroys it. Never rejects.
 */
export async function giveBack(lease: Lease<PooledDriverConnection>): Promise<void> {
  if (lease.released) return;
  const resource = lease.resource;
  let clean = !resource.broken;
  if (clean) {
    try {
      // Drivers take deadlines only as signals, never from the scope: nothing to step out of.
      // A driver bounds its own reset (its cancel grace period): one that fails, or does not
      // finish in time, leaves the connection in doubt.
      await resource.reset();
    } catch {
      // A connection that cannot be reset cannot be trusted.
      clean = false;
    }
  }
  if (clean && !resource.broken) lease.release();
  else lease.destroy();
}
