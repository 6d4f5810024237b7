/**
 * Which tables a statement reads or writes, from Kysely's operation-node tree
 * (`compiledQuery.query`): the tags a cached result is filed under, and the tags a write
 * invalidates.
 *
 * A tag is the table's name without its schema: `public.users` and `users` (a query made
 * with `withSchema`, another without) are one tag. Two schemas' tables of one name then
 * share a tag, which only invalidates a little more than needed; two tags for one table
 * would miss invalidations.
 */
import type { OperationNode } from 'kysely';

/** What `readTables` found in a query. */
export interface QueryTables {
  /** Every table named, sorted, without repeats. */
  readonly tables: readonly string[];
  /**
   * The query has raw SQL that may name tables sluice cannot see (a `sql` fragment with
   * FROM or JOIN in it, or a whole raw query): its tables cannot be trusted to be complete.
   */
  readonly opaque: boolean;
  /** The query writes (an INSERT, UPDATE, DELETE or MERGE, at its root or in a WITH). */
  readonly writes: boolean;
}

/** The tag of table `name` (`schema.table` or `table`): the table's own name. */
export function tableTag(name: string): string {
  const dot = name.lastIndexOf('.');
  return dot < 0 ? name : name.slice(dot + 1);
}

interface TableNodeShape {
  readonly kind: 'TableNode';
  readonly table: { readonly identifier: { readonly name: string } };
}
interface RawNodeShape {
  readonly kind: 'RawNode';
  readonly sqlFragments: readonly string[];
}

/**
 * Node kinds never walked into: those holding user values, not SQL (a parameter may be any
 * object), and column references, whose table is a qualifier (`u.id`: a table or an alias)
 * naming something the FROM clause or a join names already.
 */
const SKIPPED_KINDS: ReadonlySet<string> = new Set(['ValueNode', 'PrimitiveValueListNode', 'DefaultInsertValueNode', 'ReferenceNode']);
const WRITE_KINDS: ReadonlySet<string> = new Set(['InsertQueryNode', 'UpdateQueryNode', 'DeleteQueryNode', 'MergeQueryNode']);
/** Raw SQL that reads a table names it after one of these words. */
const READS_TABLES = /\b(from|join)\b/i;

function isNode(value: unknown): value is OperationNode {
  return value !== null && typeof value === 'object' && typeof (value as { kind?: unknown }).kind === 'string';
}

/** Calls `visit` on `node` and every node under it, but those of SKIPPED_KINDS. */
function walk(node: OperationNode, visit: (node: OperationNode) => void): void {
  if (SKIPPED_KINDS.has(node.kind)) return;
  visit(node);
  for (const key of Object.keys(node)) {
    const child = (node as unknown as Record<string, unknown>)[key];
    if (Array.isArray(child)) {
      for (const item of child) if (isNode(item)) walk(item, visit);
    } else if (isNode(child)) {
      walk(child, visit);
    }
  }
}

/** The tables a query reads (every TableNode: FROM, joins, subqueries, CTEs), and whether that list can be trusted. */
export function readTables(root: OperationNode): QueryTables {
  const tables = new Set<string>();
  let opaque = false;
  let writes = false;
  walk(root, (node) => {
    if (node.kind === 'TableNode') tables.add(tableTag((node as unknown as TableNodeShape).table.identifier.name));
    else if (node.kind === 'RawNode') {
      if ((node as unknown as RawNodeShape).sqlFragments.some((fragment) => READS_TABLES.test(fragment))) opaque = true;
    } else if (WRITE_KINDS.has(node.kind)) writes = true;
  });
  // A raw query at the root (`sql\`SELECT ...\``) says nothing of its tables, whatever its text.
  if (root.kind === 'RawNode') opaque = true;
  return { tables: [...tables].sort(), opaque, writes };
}

/** The nodes under a write's target positions: where the tables it changes are named. */
function targetsOf(node: OperationNode): ReadonlyArray<OperationNode | undefined> {
  const n = node as unknown as Record<string, OperationNode | ReadonlyArray<OperationNode> | undefined>;
  switch (node.kind) {
    case 'InsertQueryNode':
      return [n['into'] as OperationNode | undefined];
    case 'UpdateQueryNode':
      // The table (a list of them for MySQL's multi-table UPDATE) and its joins, which MySQL's
      // UPDATE ... JOIN can also set; not PostgreSQL's UPDATE ... FROM, which only reads.
      return [n['table'] as OperationNode | undefined, ...joinedTables(n['joins'])];
    case 'DeleteQueryNode':
      // MySQL's multi-table DELETE names its targets in FROM too; USING only reads.
      return [n['from'] as OperationNode | undefined, ...joinedTables(n['joins'])];
    case 'MergeQueryNode':
      return [n['into'] as OperationNode | undefined];
    default:
      return [];
  }
}

/** The joined tables of a JOIN list (not their ON conditions). */
function joinedTables(joins: unknown): ReadonlyArray<OperationNode | undefined> {
  if (!Array.isArray(joins)) return [];
  return joins.map((join) => (join as { readonly table?: OperationNode }).table);
}

/** The tables named in a target position, not counting subqueries (which only read). */
function targetTables(node: OperationNode, into: Set<string>): void {
  if (node.kind === 'TableNode') {
    into.add(tableTag((node as unknown as TableNodeShape).table.identifier.name));
    return;
  }
  if (node.kind === 'SelectQueryNode' || SKIPPED_KINDS.has(node.kind)) return;
  for (const key of Object.keys(node)) {
    const child = (node as unknown as Record<string, unknown>)[key];
    if (Array.isArray(child)) {
      for (const item of child) if (isNode(item)) targetTables(item, into);
    } else if (isNode(child)) {
      targetTables(child, into);
    }
  }
}

/**
 * The tables a statement writes, or `undefined` when it is not a Kysely-built write: a
 * SELECT, DDL, or raw SQL (whose writes sluice cannot see). Cheap for the common cases: a
 * root INSERT/UPDATE/DELETE/MERGE is read at once; only a SELECT with a WITH clause (which
 * may hold `WITH x AS (DELETE ... RETURNING ...)`) is walked.
 */
export function writtenTables(root: OperationNode): readonly string[] | undefined {
  const kind = root.kind;
  if (!WRITE_KINDS.has(kind) && !(kind === 'SelectQueryNode' && (root as { readonly with?: unknown }).with !== undefined)) return undefined;
  const tables = new Set<string>();
  walk(root, (node) => {
    if (!WRITE_KINDS.has(node.kind)) return;
    for (const target of targetsOf(node)) if (target !== undefined) targetTables(target, tables);
  });
  return tables.size === 0 ? undefined : [...tables];
}
