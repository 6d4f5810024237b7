/**
 * The SQLite connection that runs *inside* a worker thread of the offload host: plain,
 * blocking better-sqlite3. The host imports this module in each worker, calls `open`
 * once, then `run` for each statement; the main thread never blocks on it.
 *
 * Parameters are bound, never spliced, after three conversions SQLite needs (it has no
 * boolean, date or undefined type): `true`/`false` become `1`/`0`, a `Date` becomes its
 * ISO 8601 text in UTC (`2024-05-01T12:00:00.000Z`, which sorts and compares as text and
 * which SQLite's date functions read), and `undefined` becomes NULL. They read back as
 * what SQLite stored: numbers and strings.
 */
import Database from 'better-sqlite3';
import type { BlockingConnection, BlockingResult, OpenBlockingConnection } from '../offload/blocking-driver.js';
import { OPEN_ERROR_NAME } from './open-error.js';

/** What each worker is given to open its connection. Must survive the structured clone. */
export interface SqliteConfig {
  /** An absolute file path, or `:memory:`. */
  readonly path: string;
  /** How long a statement waits for a lock held by another connection before SQLITE_BUSY. */
  readonly busyTimeoutMs: number;
  /** Prepared statements kept, least recently used out. 0 prepares every statement afresh. */
  readonly statementCacheSize: number;
  /** Integers read back as `bigint` (exact beyond 2^53) instead of `number`. */
  readonly bigints: boolean;
}

type Statement = Database.Statement<unknown[]>;

/** A prepared statement and what is read of it on every run (better-sqlite3's getters cost a native call each). */
interface Prepared {
  readonly statement: Statement;
  readonly reader: boolean;
  /** A reader's column names, read once (`columns()` allocates on every call). */
  readonly columns: string[];
  /** Whether it is an INSERT or REPLACE, which has an insert id. */
  readonly isInsert: boolean;
}

/** `INSERT` or `REPLACE` (possibly after a `WITH`): the statements that have an insert id. */
const INSERTS = /^(?:insert|replace)\b|^with\b[\s\S]*\b(?:insert|replace)\b/i;
/** Leading whitespace and comments. */
const LEADING_NOISE = /^(?:\s+|--[^\n]*(?:\n|$)|\/\*[\s\S]*?\*\/)*/;

export const open: OpenBlockingConnection<SqliteConfig> = (config) => {
  const db = openDatabase(config);
  const cache = new Map<string, Prepared>();
  /** The most recently used statement's text: already last in the cache, nothing to move. */
  let latest: string | undefined;

  const prepare = (sql: string): Prepared => {
    const cached = cache.get(sql);
    if (cached !== undefined) {
      if (sql !== latest) {
        // Most recently used last: the first key is the one to evict.
        cache.delete(sql);
        cache.set(sql, cached);
        latest = sql;
      }
      return cached;
    }
    const statement = db.prepare<unknown[]>(sql);
    const reader = statement.reader;
    // Rows as arrays: the column names cross the thread boundary once per result.
    if (reader) statement.raw(true);
    const prepared: Prepared = {
      statement,
      reader,
      columns: reader ? statement.columns().map((column) => column.name) : [],
      isInsert: INSERTS.test(sql.replace(LEADING_NOISE, '')),
    };
    if (config.statementCacheSize > 0) {
      cache.set(sql, prepared);
      latest = sql;
      if (cache.size > config.statementCacheSize) cache.delete(cache.keys().next().value!);
    }
    return prepared;
  };

  return {
    run(sql: string, parameters: readonly unknown[]): BlockingResult {
      let prepared: Prepared;
      try {
        prepared = prepare(sql);
      } catch (error) {
        // A script of several statements (a schema, say) without parameters runs as one
        // exec, as PostgreSQL's simple query protocol would run it.
        if (parameters.length === 0 && isMultipleStatements(error)) {
          db.exec(sql);
          return { rows: [], columns: [], inTransaction: db.inTransaction };
        }
        throw error;
      }
      const { statement } = prepared;
      const values = toSqliteValues(parameters);
      if (prepared.reader) {
        const rows = statement.all(...values) as unknown[][];
        return { rows, columns: prepared.columns, inTransaction: db.inTransaction };
      }
      const { changes, lastInsertRowid } = statement.run(...values);
      // SQLite keeps the last rowid of the connection: an INSERT that inserted nothing
      // (ON CONFLICT DO NOTHING) would report an older statement's.
      const isInsert = changes > 0 && prepared.isInsert;
      return {
        rows: [],
        columns: [],
        affectedRows: changes,
        ...(isInsert ? { insertId: lastInsertRowid } : {}),
        inTransaction: db.inTransaction,
      };
    },
    reset(): void {
      if (db.inTransaction) db.exec('ROLLBACK');
    },
    close(): void {
      cache.clear();
      db.close();
    },
  } satisfies BlockingConnection;
};

function openDatabase(config: SqliteConfig): Database.Database {
  let db: Database.Database | undefined;
  try {
    db = new Database(config.path, { timeout: config.busyTimeoutMs });
    db.defaultSafeIntegers(config.bigints);
    if (config.path !== ':memory:') {
      // WAL: readers and the one writer do not block each other, and a commit is one
      // append. NORMAL: a commit is durable once the WAL is checkpointed; a power cut can
      // lose the last transactions but never corrupts the file (the setting WAL is made for).
      // Both read the file, so a file that is not a database fails here, at connect.
      // (A database another process holds open in rollback-journal mode may refuse the
      // switch; it then works on in its current mode, with readers and writer serialized.)
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = NORMAL');
    }
    db.pragma('foreign_keys = ON');
    return db;
  } catch (error) {
    try {
      db?.close();
    } catch {
      // Closing a connection that failed to open: nothing more to do.
    }
    throw asOpenError(error);
  }
}

/**
 * Marks an error from opening as such: the main thread then reports it as a failed connect
 * (fail fast for a missing directory or a file that is not a database), not a failed query.
 */
function asOpenError(error: unknown): Error {
  const code = (error as { readonly code?: unknown } | null)?.code;
  const message = error instanceof Error ? error.message : String(error);
  // better-sqlite3 checks the directory itself and throws a TypeError without a code.
  const sqliteCode = typeof code === 'string' ? code : /directory does not exist/.test(message) ? 'SQLITE_CANTOPEN' : undefined;
  return Object.assign(new Error(message, { cause: error }), {
    name: OPEN_ERROR_NAME,
    ...(sqliteCode !== undefined ? { code: sqliteCode } : {}),
  });
}

function isMultipleStatements(error: unknown): boolean {
  return error instanceof RangeError && /more than one statement/.test(error.message);
}

/** The parameters as SQLite binds them; the array itself when none needs converting. */
function toSqliteValues(parameters: readonly unknown[]): readonly unknown[] {
  for (let i = 0; i < parameters.length; i++) {
    const value = parameters[i];
    const type = typeof value;
    if (type === 'boolean' || type === 'undefined' || value instanceof Date) return parameters.map(toSqliteValue);
  }
  return parameters;
}

/** Converts a parameter to a value SQLite can bind (see the module comment). */
function toSqliteValue(value: unknown): unknown {
  switch (typeof value) {
    case 'boolean':
      return value ? 1 : 0;
    case 'undefined':
      return null;
    case 'object':
      return value instanceof Date ? value.toISOString() : value;
    default:
      return value;
  }
}
