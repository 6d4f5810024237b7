import type { Selectable } from 'kysely';
import type { Relation } from './relations.js';

/**
 * Carries a model's database and table at the type level only: nothing is stored under it.
 * A symbol, so it never collides with a column.
 */
declare const MODEL_TYPES: unique symbol;

/** Where an instance keeps the column values it was loaded with (see `changedColumns`). */
export const SNAPSHOT: unique symbol = Symbol('sluice.model.snapshot');

/** The columns of one row of `TB`, as selected. */
export type RowOf<DB, TB extends keyof DB> = Selectable<DB[TB]>;

/** What every model instance has besides its columns. */
export interface ModelInstance<DB = unknown, TB = unknown> {
  /** Type-level only: which database and table the instance belongs to. */
  readonly [MODEL_TYPES]?: { readonly db: DB; readonly table: TB };
  /**
   * The column values as loaded (or last saved), for updating changed columns only;
   * `undefined` for an instance that was never in the database.
   */
  [SNAPSHOT]: Readonly<Record<string, unknown>> | undefined;
}

/** Any model class, whatever its database. */
// The types of a particular model are read back from its class (DatabaseOf, TableOf).
export interface AnyModelClass {
  new (): ModelInstance;
  readonly table: string;
  readonly primaryKey: string;
  // No `relations` here: checking a class against this type would then need its relations'
  // types, which name the other models, whose relations name this one (a cycle TypeScript
  // gives up on). Read them with relationsOf().
}

/** The relations a model class declares in `static relations`. */
export function relationsOf(model: AnyModelClass): Readonly<Record<string, Relation>> {
  return (model as { readonly relations?: Readonly<Record<string, Relation>> }).relations ?? {};
}

export type InstanceOf<C extends AnyModelClass> = InstanceType<C>;
export type DatabaseOf<C extends AnyModelClass> = InstanceType<C> extends ModelInstance<infer DB, unknown> ? DB : never;
export type TableOf<C extends AnyModelClass> = C['table'] & keyof DatabaseOf<C> & string;

export interface ModelOptions<PK extends string> {
  /** The primary key column (one column). Default `'id'`. */
  readonly primaryKey?: PK;
}

/**
 * The base class of a model of `table`, with its columns as typed fields:
 *
 * ```ts
 * const Model = defineModels<DB>();
 * class User extends Model('users') {
 *   get displayName() { return `${this.name} <${this.email}>`; }
 * }
 * ```
 *
 * A function rather than `Model<DB, 'users'>`: the table name is needed at run time, and
 * type arguments are erased.
 */
export type ModelFactory<DB> = <TB extends keyof DB & string, PK extends keyof DB[TB] & string = 'id' & keyof DB[TB] & string>(
  table: TB,
  options?: ModelOptions<PK>,
) => {
  new (): ModelInstance<DB, TB> & RowOf<DB, TB>;
  readonly prototype: ModelInstance<DB, TB> & RowOf<DB, TB>;
  readonly table: TB;
  readonly primaryKey: PK;
};

/** The base of every model class; `Model(...)` makes one subclass per table. */
class ModelBase {
  // An own field, set before any column: every instance of a model shares one hidden class.
  [SNAPSHOT]: Readonly<Record<string, unknown>> | undefined = undefined;
}

/** Binds the database interface once, so that each model names only its table. */
export function defineModels<DB>(): ModelFactory<DB> {
  return ((table: string, options: ModelOptions<string> = {}) => {
    if (typeof table !== 'string' || table === '') {
      throw new TypeError('A model needs the name of its table: Model(\'users\').');
    }
    const primaryKey = options.primaryKey ?? 'id';
    return class extends ModelBase {
      static readonly table = table;
      static readonly primaryKey = primaryKey;
    };
  }) as unknown as ModelFactory<DB>;
}

/** True for an instance of any model. */
export function isModelInstance(value: unknown): value is ModelInstance {
  return value instanceof ModelBase;
}

/** Makes an instance of `model` from a row, remembering the row as loaded. */
export function hydrate<I extends ModelInstance>(model: { new (): I }, row: Readonly<Record<string, unknown>>): I {
  return hydratorFor(model, row)(row);
}

/** Makes instances of `model` from rows of one result (which all have the same columns). */
export function hydrateAll<I extends ModelInstance>(model: { new (): I }, rows: ReadonlyArray<Readonly<Record<string, unknown>>>): I[] {
  const instances = new Array<I>(rows.length);
  if (rows.length === 0) return instances;
  const make = hydratorFor(model, rows[0]!);
  for (let i = 0; i < rows.length; i++) instances[i] = make(rows[i]!);
  return instances;
}

type Hydrator<I> = (row: Readonly<Record<string, unknown>>) => I;

/** Hydrators per model, by column list. Bounded: queries selecting ever new column sets fall back to a loop. */
const hydrators = new WeakMap<object, Map<string, Hydrator<unknown>>>();
const MAX_SHAPES = 64;

/**
 * A function copying exactly `row`'s columns, compiled once per model and column list: a
 * property store per column by name is several times faster than a `for...in` copy, whose
 * stores by computed key V8 cannot specialise. This is most of what keeps hydrating 10,000
 * rows close to the cost of reading them. The keys are written as JSON string literals, so
 * no column name can become code. A row of other columns (a hand-made one) is copied by the loop.
 */
function hydratorFor<I extends ModelInstance>(model: { new (): I }, row: Readonly<Record<string, unknown>>): Hydrator<I> {
  const keys = Object.keys(row);
  const shape = keys.join('\u0000');
  let byShape = hydrators.get(model);
  if (byShape === undefined) hydrators.set(model, (byShape = new Map()));
  let make = byShape.get(shape) as Hydrator<I> | undefined;
  if (make !== undefined) return make;
  if (byShape.size >= MAX_SHAPES) return (r) => copyInto(new model(), r);
  const body = keys.map((key) => `o[${JSON.stringify(key)}] = r[${JSON.stringify(key)}];`).join('\n');
  // eslint-disable-next-line @typescript-eslint/no-implied-eval -- see above: keys are JSON literals.
  const compiled = new Function('M', 'S', 'snap', `return function hydrate(r) { const o = new M();\n${body}\no[S] = snap(r); return o; };`) as (
    model: { new (): I },
    snapshot: typeof SNAPSHOT,
    snap: typeof snapshotOf,
  ) => Hydrator<I>;
  make = compiled(model, SNAPSHOT, snapshotOf);
  byShape.set(shape, make as Hydrator<unknown>);
  return make;
}

function copyInto<I extends ModelInstance>(instance: I, row: Readonly<Record<string, unknown>>): I {
  const fields = instance as unknown as Record<string, unknown>;
  for (const key in row) fields[key] = row[key];
  instance[SNAPSHOT] = snapshotOf(row);
  return instance;
}

/**
 * The values as loaded, kept apart from the instance's own. A row of plain values is its own
 * snapshot (the instance holds copies of them); an object value (a JSON column, a Date, bytes)
 * is shared with the instance, so the snapshot keeps a clone of it: edited in place
 * (`user.meta.n = 2`, `post.at.setFullYear(...)`), it must still count as changed.
 */
export function snapshotOf(row: Readonly<Record<string, unknown>>): Readonly<Record<string, unknown>> {
  let copy: Record<string, unknown> | undefined;
  for (const key in row) {
    const value = row[key];
    if (value !== null && typeof value === 'object') {
      copy ??= { ...row };
      copy[key] = structuredClone(value);
    }
  }
  return copy ?? row;
}

/**
 * The columns whose value differs from the snapshot (or, for columns not loaded, that were
 * set since), with their new values. `skip` names properties that are not columns
 * (loaded relations).
 */
export function changedColumns(instance: ModelInstance, skip: ReadonlySet<string>): Record<string, unknown> {
  const snapshot = instance[SNAPSHOT] ?? {};
  const values = instance as unknown as Record<string, unknown>;
  const changed: Record<string, unknown> = {};
  for (const key of Object.keys(values)) {
    if (skip.has(key)) continue;
    const value = values[key];
    if (key in snapshot) {
      if (!sameValue(value, snapshot[key])) changed[key] = value;
    } else if (value !== undefined) {
      // A column not loaded, set since. (An instance field the class declares without a
      // value is an own `undefined` property: not a column, not written.)
      changed[key] = value;
    }
  }
  return changed;
}

/** Whether a column kept its value: dates by time, bytes by content, JSON values by text. */
function sameValue(a: unknown, b: unknown): boolean {
  if (Object.is(a, b)) return true;
  if (a instanceof Date && b instanceof Date) return a.getTime() === b.getTime();
  if (a instanceof Uint8Array && b instanceof Uint8Array) return Buffer.from(a).equals(b);
  if (a !== null && b !== null && typeof a === 'object' && typeof b === 'object') {
    // JSON columns come back as fresh objects: compare what would be written.
    return JSON.stringify(a) === JSON.stringify(b);
  }
  return false;
}
