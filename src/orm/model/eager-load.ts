import type { Kysely } from 'kysely';
import { InvalidOptionError } from '../../errors.js';
import { type AnyModelClass, hydrateAll, type ModelInstance, relationsOf } from './model.js';
import type { Relation } from './relations.js';

/** Kysely over tables named at run time. Internal only: users see their own `DB`. */
export type LooseDB = Record<string, Record<string, unknown>>;

/**
 * Keys per `IN (...)` list. One query per relation level up to this many distinct keys;
 * beyond it, one per this many (PostgreSQL takes at most 65,535 parameters a statement).
 */
export const IN_LIST_LIMIT = 10_000;

/** The alias of the join table's key column in a many-to-many query. */
const PARENT_KEY = '__sluice_parent_key';

/** Relation paths as a tree: `['posts', 'posts.comments', 'author']` → posts → comments; author. */
interface PathTree extends Map<string, PathTree> {}

function pathTree(paths: readonly string[]): PathTree {
  const root: PathTree = new Map();
  for (const path of paths) {
    let node = root;
    for (const name of path.split('.')) {
      let child = node.get(name);
      if (child === undefined) node.set(name, (child = new Map()));
      node = child;
    }
  }
  return root;
}

/**
 * Loads `paths` onto `parents`: one query per relation at each level, whatever the number of
 * parents (`WHERE key IN (...)`), never one per row. Siblings run one after another, so
 * that inside a transaction they share its connection in order.
 */
export async function loadRelations(
  kysely: Kysely<LooseDB>,
  model: AnyModelClass,
  parents: readonly ModelInstance[],
  paths: readonly string[],
): Promise<void> {
  await loadTree(kysely, model, parents, pathTree(paths));
}

async function loadTree(kysely: Kysely<LooseDB>, model: AnyModelClass, parents: readonly ModelInstance[], tree: PathTree): Promise<void> {
  for (const [name, children] of tree) {
    const relation = relationsOf(model)[name];
    if (relation === undefined) {
      const known = Object.keys(relationsOf(model));
      throw new InvalidOptionError(
        'relation',
        `${model.name} has no relation '${name}' (declared: ${known.length > 0 ? known.join(', ') : 'none'}); declare it in static relations.`,
      );
    }
    const loaded = await loadRelation(kysely, model, relation, name, parents as ReadonlyArray<ModelInstance & Record<string, unknown>>);
    if (children.size > 0 && loaded.length > 0) await loadTree(kysely, relation.target(), loaded, children);
  }
}

/** Loads one relation onto every parent; gives back every instance it loaded. */
async function loadRelation(
  kysely: Kysely<LooseDB>,
  model: AnyModelClass,
  relation: Relation,
  name: string,
  parents: ReadonlyArray<ModelInstance & Record<string, unknown>>,
): Promise<ModelInstance[]> {
  const target = relation.target();
  const targetKey = (relation.kind === 'belongsTo' ? relation.references : relation.kind === 'manyToMany' ? relation.targetKey : undefined) ?? target.primaryKey;
  // The parents' column holding the key to look up.
  const parentColumn = relation.kind === 'belongsTo' ? relation.foreignKey : (relation.localKey ?? model.primaryKey);
  const keys = distinctKeys(parents, parentColumn);
  const byKey = new Map<string, Array<ModelInstance & Record<string, unknown>>>();
  const all: ModelInstance[] = [];
  const add = (key: unknown, instance: ModelInstance & Record<string, unknown>): void => {
    const normal = keyOf(key);
    const group = byKey.get(normal);
    if (group === undefined) byKey.set(normal, [instance]);
    else group.push(instance);
    all.push(instance);
  };
  for (let start = 0; start < keys.length; start += IN_LIST_LIMIT) {
    const chunk = keys.slice(start, start + IN_LIST_LIMIT);
    if (relation.kind === 'manyToMany') {
      const rows = await kysely
        .selectFrom(target.table)
        .innerJoin(relation.through, `${relation.through}.${relation.to}`, `${target.table}.${targetKey}`)
        .selectAll(target.table)
        .select(`${relation.through}.${relation.from} as ${PARENT_KEY}`)
        .where(`${relation.through}.${relation.from}`, 'in', chunk)
        .orderBy(`${target.table}.${target.primaryKey}`)
        .execute();
      const parentKeys = new Array<unknown>(rows.length);
      const own = rows.map(({ [PARENT_KEY]: parentKey, ...row }, i) => {
        parentKeys[i] = parentKey;
        return row;
      });
      const instances = hydrateAll(target, own) as Array<ModelInstance & Record<string, unknown>>;
      for (let i = 0; i < instances.length; i++) add(parentKeys[i], instances[i]!);
    } else {
      const column = relation.kind === 'belongsTo' ? targetKey : relation.foreignKey;
      const rows = await kysely.selectFrom(target.table).selectAll().where(column, 'in', chunk).orderBy(target.primaryKey).execute();
      const instances = hydrateAll(target, rows) as Array<ModelInstance & Record<string, unknown>>;
      for (let i = 0; i < rows.length; i++) add(rows[i]![column], instances[i]!);
    }
  }
  for (const parent of parents) {
    const key = parent[parentColumn];
    const group = key === null || key === undefined ? undefined : byKey.get(keyOf(key));
    parent[name] = relation.kind === 'belongsTo' ? (group?.[0] ?? null) : (group ?? []);
  }
  return all;
}

function distinctKeys(parents: ReadonlyArray<Record<string, unknown>>, column: string): unknown[] {
  const seen = new Map<string, unknown>();
  for (const parent of parents) {
    const key = parent[column];
    if (key !== null && key !== undefined) seen.set(keyOf(key), key);
  }
  return [...seen.values()];
}

/**
 * One key for equal values of different JavaScript types: a MySQL BIGINT may come back as a
 * string on one side and a number on the other, SQLite's as a bigint.
 */
function keyOf(value: unknown): string {
  if (value instanceof Date) return value.toISOString();
  // Bytes (BINARY(16) UUIDs): as hex, since String() decodes UTF-8 and merges distinct keys.
  if (value instanceof Uint8Array) return `bytes:${Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('hex')}`;
  return String(value);
}
