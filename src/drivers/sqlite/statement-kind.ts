/**
 * What a statement does to SQLite's one write lock, read from its text: whether it can run
 * beside a writer (`read`), must hold the lock while it runs (`write`), opens a transaction
 * that holds it until the end (`begin`), or ends one (`end`).
 *
 * When unsure it says `write`: holding the lock for a statement that did not need it costs
 * a little parallelism, while a write without it would only meet SQLite's own lock (and
 * wait on it, up to the busy timeout).
 */
export type StatementKind = 'read' | 'write' | 'begin' | 'end';

/** Leading whitespace and comments. */
const LEADING_NOISE = /^(?:\s+|--[^\n]*(?:\n|$)|\/\*[\s\S]*?\*\/)*/;
const FIRST_WORD = /^[a-z]+/i;
const WRITES = /\b(?:insert|update|delete|replace)\b/i;
/** A `;` followed by more than whitespace: a script of several statements. */
const SEVERAL = /;(?:\s|--[^\n]*(?:\n|$)|\/\*[\s\S]*?\*\/)*[^\s;]/;
/**
 * A BEGIN or SAVEPOINT starting any statement of a script: the script may leave a
 * transaction open, so it must pin its worker like a BEGIN (workers are shared by sessions).
 */
const OPENS_TRANSACTION = /(?:^|;)(?:\s|--[^\n]*(?:\n|$)|\/\*[\s\S]*?\*\/)*(?:begin|savepoint)\b/i;
/** `PRAGMA [schema.]name [= value | (argument)]`. */
const PRAGMA = /^pragma\s+(?:[\w"`[\]]+\s*\.\s*)?(\w+)\s*(=|\()?/i;
/** PRAGMAs that read, even with an argument: `PRAGMA table_info(person)`. */
const READ_PRAGMAS_WITH_ARGUMENT = new Set([
  'foreign_key_check',
  'foreign_key_list',
  'index_info',
  'index_list',
  'index_xinfo',
  'integrity_check',
  'quick_check',
  'table_info',
  'table_list',
  'table_xinfo',
]);
/** PRAGMAs that write without any argument. */
const WRITE_PRAGMAS = new Set(['optimize', 'wal_checkpoint', 'incremental_vacuum', 'shrink_memory']);

/** Kinds of recent statement texts: an application runs the same few texts over and over. */
const cache = new Map<string, StatementKind>();
const CACHE_SIZE = 500;

export function statementKind(sql: string): StatementKind {
  let kind = cache.get(sql);
  if (kind === undefined) {
    kind = classify(sql);
    // Cleared when full rather than kept in LRU order: cheaper, and refilled at once.
    if (cache.size >= CACHE_SIZE) cache.clear();
    cache.set(sql, kind);
  }
  return kind;
}

function classify(sql: string): StatementKind {
  const text = sql.replace(LEADING_NOISE, '');
  if (SEVERAL.test(text) && OPENS_TRANSACTION.test(text)) return 'begin';
  const word = FIRST_WORD.exec(text)?.[0].toLowerCase();
  switch (word) {
    case 'begin':
    case 'savepoint': // outside a transaction, SAVEPOINT opens one
      return 'begin';
    case 'commit':
    case 'end':
      return 'end';
    case 'rollback':
      // ROLLBACK TO [SAVEPOINT] x undoes part of a transaction and keeps it open.
      return /^rollback(?:\s+transaction)?\s*(?:;\s*)?$/i.test(text.trimEnd()) ? 'end' : 'write';
    case 'select':
    case 'values':
    case 'explain':
      return SEVERAL.test(text) ? 'write' : 'read';
    case 'with':
      return SEVERAL.test(text) || WRITES.test(text) ? 'write' : 'read';
    case 'pragma': {
      if (SEVERAL.test(text)) return 'write';
      const match = PRAGMA.exec(text);
      if (match === null) return 'write';
      const name = match[1]!.toLowerCase();
      const argument = match[2];
      if (argument === '=') return 'write';
      if (argument === '(') return READ_PRAGMAS_WITH_ARGUMENT.has(name) ? 'read' : 'write';
      return WRITE_PRAGMAS.has(name) ? 'write' : 'read';
    }
    default:
      return 'write';
  }
}
