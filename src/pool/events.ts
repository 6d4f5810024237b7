/** Why the pool destroyed a resource. */
export type DestroyReason =
  /** Idle longer than `idleTimeoutMs`. */
  | 'idle'
  /** Older than its (jittered) `maxLifetimeMs`. */
  | 'lifetime'
  /** `validate` returned false, threw or timed out. */
  | 'validation'
  /** The holder called `lease.destroy()`, or `use()` saw a fatal error. */
  | 'destroyed'
  /** `pool.evict()` reported it broken (e.g. its socket closed while idle). */
  | 'evicted'
  /** The pool closed. */
  | 'closed'
  /** Idle, and its slot of the pool's `budget` was wanted elsewhere (`budget.keep()` said no). */
  | 'budget';

/** Which step of the pool's own work failed, for `error` events. */
export type PoolErrorPhase =
  | 'create'
  | 'destroy'
  | 'validate'
  | 'evict'
  /** A user hook (`isPermanentCreateError`, `isFatalError`) threw; the pool chose the safe side. */
  | 'hook'
  /** `close()` stopped waiting for something (a destroy call) when `closeTimeoutMs` ran out. */
  | 'close';

/** Every event the pool emits, with its payload. */
export interface PoolEvents<R> {
  /** A caller got a lease. `waitedMs` is 0 when a resource was idle. */
  readonly acquire: { readonly resource: R; readonly waitedMs: number };
  /** A lease was released back to the pool. */
  readonly release: { readonly resource: R };
  /** A new resource was created. */
  readonly create: { readonly resource: R };
  /** A resource was destroyed. */
  readonly destroy: { readonly resource: R; readonly reason: DestroyReason };
  /**
   * A background step failed: a create attempt (retried unless permanent), a destroy, a
   * validation, an eviction. Informational: unlike Node's `'error'`, an unheard one never
   * throws, and the pool carries on.
   */
  readonly error: { readonly error: unknown; readonly phase: PoolErrorPhase };
  /** A lease was held longer than `leakDetectionMs`. `stack` is where it was acquired. */
  readonly leak: { readonly resource: R; readonly heldMs: number; readonly stack: string };
  /** The pool finished closing: every resource is destroyed. */
  readonly close: Record<string, never>;
}

export type PoolEventName = keyof PoolEvents<unknown>;
export type PoolListener<R, E extends PoolEventName> = (event: PoolEvents<R>[E]) => void;

type ListenerTable<R> = { [E in PoolEventName]?: Array<PoolListener<R, E>> };

/** A `once` wrapper remembers what it wraps, so `off(original)` removes it too. */
interface OnceWrapper {
  readonly original?: unknown;
}

/**
 * A small typed event emitter. Unlike `node:events` it never throws for an unheard
 * `error`, and `has()` lets hot paths skip building a payload nobody listens to.
 * A listener that throws is reported on `process` as an uncaught exception after the
 * pool's own bookkeeping is done, so it cannot corrupt the pool.
 */
export class PoolEventEmitter<R> {
  #listeners: ListenerTable<R> = {};

  on<E extends PoolEventName>(event: E, listener: PoolListener<R, E>): this {
    const list = (this.#listeners[event] ?? []) as Array<PoolListener<R, E>>;
    // Copy on write: an emit in progress keeps iterating the list it started with.
    this.#listeners[event] = [...list, listener] as ListenerTable<R>[E];
    return this;
  }

  once<E extends PoolEventName>(event: E, listener: PoolListener<R, E>): this {
    const wrapper: PoolListener<R, E> & OnceWrapper = Object.assign(
      (payload: PoolEvents<R>[E]) => {
        this.off(event, wrapper);
        listener(payload);
      },
      { original: listener },
    );
    return this.on(event, wrapper);
  }

  off<E extends PoolEventName>(event: E, listener: PoolListener<R, E>): this {
    const list = this.#listeners[event] as Array<PoolListener<R, E>> | undefined;
    if (list === undefined) return this;
    const index = list.findIndex((l) => l === listener || (l as OnceWrapper).original === listener);
    if (index === -1) return this;
    const next = list.filter((_, i) => i !== index);
    this.#listeners[event] = (next.length > 0 ? next : undefined) as ListenerTable<R>[E];
    return this;
  }

  /** True when someone listens: lets callers skip building a payload. */
  has(event: PoolEventName): boolean {
    return this.#listeners[event] !== undefined;
  }

  emit<E extends PoolEventName>(event: E, payload: PoolEvents<R>[E]): void {
    const list = this.#listeners[event] as Array<PoolListener<R, E>> | undefined;
    if (list === undefined) return;
    for (const listener of list) {
      try {
        listener(payload);
      } catch (error) {
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }
}
