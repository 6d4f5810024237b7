/** What happened to one migration in a run. */
export interface MigrationOutcome {
  readonly name: string;
  readonly direction: 'up' | 'down';
  /**
   * `applied` (up) and `reverted` (down) are committed; `rolled back` ran, but a later
   * migration of the same run failed and the run's transaction (PostgreSQL, SQLite) undid
   * it; `failed` is the one that failed; `not run` came after it.
   */
  readonly status: 'applied' | 'reverted' | 'rolled back' | 'failed' | 'not run';
  /** How long its `up` or `down` took, when it ran. */
  readonly durationMs?: number;
}

/** A migration run that succeeded. */
export interface MigrationRun {
  /** The migrations it ran, in order: empty when there was nothing to do. */
  readonly results: readonly MigrationOutcome[];
}

/** One migration and whether it is applied. */
export interface MigrationState {
  readonly name: string;
  /** When it was applied; `undefined` while it is pending. */
  readonly executedAt: Date | undefined;
}

/** Progress of a run, as it happens (the CLI prints these). */
export type MigrationEvent =
  /** Another run holds the lock: this one waits for it (up to `lockTimeoutMs`). */
  | { readonly kind: 'lock-wait' }
  | { readonly kind: 'start'; readonly name: string; readonly direction: 'up' | 'down' }
  | {
      readonly kind: 'end';
      readonly name: string;
      readonly direction: 'up' | 'down';
      readonly durationMs: number;
      readonly ok: boolean;
    };
