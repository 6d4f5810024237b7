import type { AnyModelClass, DatabaseOf, InstanceOf, TableOf } from './model.js';

/** A column of model `C`'s table. */
export type ColumnOf<C extends AnyModelClass> = keyof DatabaseOf<C>[TableOf<C>] & string;

/**
 * The owning side of a one-to-one or many-to-one: this model's `foreignKey` holds the key
 * (`references`, default the target's primary key) of one `target`. Loads as an instance or null.
 */
export interface BelongsTo<C extends AnyModelClass = AnyModelClass> {
  readonly kind: 'belongsTo';
  /** A function, so that two models can name each other whichever is declared first. */
  readonly target: () => C;
  readonly foreignKey: string;
  readonly references: string | undefined;
}

/** Rows of `target` whose `foreignKey` holds this model's `localKey` (default its primary key). Loads as an array. */
export interface HasMany<C extends AnyModelClass = AnyModelClass> {
  readonly kind: 'hasMany';
  readonly target: () => C;
  readonly foreignKey: string;
  readonly localKey: string | undefined;
}

/**
 * Rows of `target` linked through the join table `through`: its `from` column holds this
 * model's key, its `to` column the target's. Loads as an array.
 */
export interface ManyToMany<C extends AnyModelClass = AnyModelClass> {
  readonly kind: 'manyToMany';
  readonly target: () => C;
  readonly through: string;
  readonly from: string;
  readonly to: string;
  readonly localKey: string | undefined;
  readonly targetKey: string | undefined;
}

export type Relation<C extends AnyModelClass = AnyModelClass> = BelongsTo<C> | HasMany<C> | ManyToMany<C>;

/**
 * `static readonly relations = { author: belongsTo(() => User, { foreignKey: 'user_id' }) }`.
 * `foreignKey` is a column of the declaring model (not checked here: the declaring class is
 * not known yet where its relations are written).
 */
export function belongsTo<C extends AnyModelClass>(
  target: () => C,
  options: { readonly foreignKey: string; readonly references?: ColumnOf<C> },
): BelongsTo<C> {
  return Object.freeze({ kind: 'belongsTo', target, foreignKey: options.foreignKey, references: options.references });
}

/** `static readonly relations = { posts: hasMany(() => Post, { foreignKey: 'user_id' }) }`. */
export function hasMany<C extends AnyModelClass>(
  target: () => C,
  options: { readonly foreignKey: ColumnOf<C>; readonly localKey?: string },
): HasMany<C> {
  return Object.freeze({ kind: 'hasMany', target, foreignKey: options.foreignKey, localKey: options.localKey });
}

/** `static readonly relations = { tags: manyToMany(() => Tag, { through: 'post_tags', from: 'post_id', to: 'tag_id' }) }`. */
export function manyToMany<C extends AnyModelClass, T extends keyof DatabaseOf<C> & string>(
  target: () => C,
  options: {
    readonly through: T;
    readonly from: keyof DatabaseOf<C>[T] & string;
    readonly to: keyof DatabaseOf<C>[T] & string;
    readonly localKey?: string;
    readonly targetKey?: ColumnOf<C>;
  },
): ManyToMany<C> {
  return Object.freeze({
    kind: 'manyToMany',
    target,
    through: options.through,
    from: options.from,
    to: options.to,
    localKey: options.localKey,
    targetKey: options.targetKey,
  });
}

/** The relations model class `C` declares. */
export type RelationsOf<C> = C extends { readonly relations: infer R } ? R : {};

type TargetOf<R> = R extends Relation<infer T> ? T : never;

/** How deep relation paths are typed: `a.b.c.d` at most (enough, and keeps the compiler fast). */
type Depth = [never, 0, 1, 2, 3];

/** The relation paths of `C`: `'posts'`, `'posts.comments'`, `'posts.author'`, ... */
export type RelationPath<C, D extends number = 4> = [D] extends [never]
  ? never
  : {
      [K in keyof RelationsOf<C> & string]: K | `${K}.${RelationPath<TargetOf<RelationsOf<C>[K]>, Depth[D]>}`;
    }[keyof RelationsOf<C> & string];

/** What a relation loads as: one instance or null, or an array. */
type LoadedAs<R, I> = R extends BelongsTo<AnyModelClass> ? I | null : I[];

/** The properties that loading `path` adds to an instance of `C`, nested ones included. */
export type Loaded<C, P extends string> = P extends `${infer Head}.${infer Rest}`
  ? Head extends keyof RelationsOf<C>
    ? { [K in Head]: LoadedAs<RelationsOf<C>[Head], InstanceOf<TargetOf<RelationsOf<C>[Head]>> & Loaded<TargetOf<RelationsOf<C>[Head]>, Rest>> }
    : never
  : P extends keyof RelationsOf<C>
    ? { [K in P]: LoadedAs<RelationsOf<C>[P], InstanceOf<TargetOf<RelationsOf<C>[P]>>> }
    : never;
