import { type Insertable, type Kysely, type SelectQueryBuilder, sql, type Transaction } from 'kysely';
import { InvalidOptionError, SluiceError } from '../../errors.js';
import type { AnyQueryCache } from '../cache/query-cache.js';
import { currentKysely, type Database } from '../connect.js';
import { withoutDeadline } from '../deadline-scope.js';
import { loadRelations, type LooseDB } from './eager-load.js';
import { HydratePlugin } from './hydrate-plugin.js';
import {
  type AnyModelClass,
  changedColumns,
  type DatabaseOf,
  hydrate,
  hydrateAll,
  type InstanceOf,
  type RowOf,
  relationsOf,
  SNAPSHOT,
  snapshotOf,
  type TableOf,
} from './model.js';
import type { Loaded, RelationPath } from './relations.js';

/** The selected row of model `C`'s table. */
export type ModelRow<C extends AnyModelClass> = RowOf<DatabaseOf<C>, TableOf<C>>;

/** What `users.insert(...)` takes: the table's insert type. */
export type ModelInsert<C extends AnyModelClass> = Insertable<DatabaseOf<C>[TableOf<C>]>;

/** A `SELECT * FROM table` builder of model `C`, to refine with `where`, joins, `orderBy`, ... */
export type ModelSelect<C extends AnyModelClass> = SelectQueryBuilder<DatabaseOf<C>, TableOf<C>, ModelRow<C>>;

/** How a model read uses a query cache: `users.find(id, { cache })`, `query.cached(cache, { ttlMs })`. */
export interface ModelCacheOptions {
  /** A query cache of the repository's database (`createQueryCache(database, ...)`). */
  readonly cache: AnyQueryCache;
  /** How long the rows are kept. Default: the cache's `ttlMs`. */
  readonly ttlMs?: number;
}

/** Thrown by `update` and `delete` when the instance's row is no longer there. */
export class ModelNotFoundError extends SluiceError {
  constructor(message: string) {
    super('MODEL_NOT_FOUND', message);
  }
}

/** Reads and writes instances of one model on one database. */
export interface Repository<C extends AnyModelClass> {
  readonly model: C;
  /**
   * A query of the model's table, refined by `build` with Kysely's own builder; `.with(path)`
   * loads relations, `.execute()` gives instances:
   * `users.query((qb) => qb.where('age', '>', 30).orderBy('name').limit(10)).with('posts').execute()`.
   */
  query(): ModelQuery<C, InstanceOf<C>>;
  query<QDB, QTB extends keyof QDB, O extends ModelRow<C>>(
    build: (qb: ModelSelect<C>) => SelectQueryBuilder<QDB, QTB, O>,
  ): ModelQuery<C, InstanceOf<C>>;
  /**
   * Kysely's builder itself, `SELECT table.* FROM table`, whose rows come back as instances:
   * `await users.selectFrom().where('id', '=', 1).executeTakeFirst()`. It runs where it is
   * built: inside `database.transaction()`, build it there (`query()` decides when it runs).
   */
  selectFrom(): SelectQueryBuilder<DatabaseOf<C>, TableOf<C>, InstanceOf<C>>;
  /**
   * The instance whose primary key is `id`, or undefined. With `{ cache }`, the row is read
   * through that query cache (see `ModelQuery.cached`).
   */
  find(id: ModelRow<C>[C['primaryKey'] & keyof ModelRow<C>], options?: ModelCacheOptions): Promise<InstanceOf<C> | undefined>;
  /** Instances of rows fetched some other way (raw `sql`), remembered as loaded. */
  hydrate(rows: ReadonlyArray<ModelRow<C>>): Array<InstanceOf<C>>;
  /** Loads relations onto instances already fetched: one query per relation level. */
  load<I extends InstanceOf<C>, P extends RelationPath<C> & string>(instances: readonly I[], path: P): Promise<Array<I & Loaded<C, P>>>;
  /** Inserts one row; the instance has its generated columns (ids, defaults). */
  insert(values: ModelInsert<C>): Promise<InstanceOf<C>>;
  /** Inserts rows in one statement; instances in the same order, with their generated ids. */
  insertMany(values: ReadonlyArray<ModelInsert<C>>): Promise<Array<InstanceOf<C>>>;
  /**
   * Writes the columns changed since the instance was loaded (or last saved), and only those:
   * a concurrent change to another column survives. Nothing is sent when nothing changed.
   * Gives back the number of columns written.
   */
  update(instance: InstanceOf<C>): Promise<number>;
  /** Deletes the instance's row. */
  delete(instance: InstanceOf<C>): Promise<void>;
}

/** An immutable query of model `C` giving instances `R` (with the relations asked for). */
export class ModelQuery<C extends AnyModelClass, R> {
  readonly #database: Database<DatabaseOf<C>>;
  readonly #model: C;
  readonly #build: (qb: ModelSelect<C>) => SelectQueryBuilder<unknown, never, unknown>;
  readonly #paths: readonly string[];
  readonly #cache: ModelCacheOptions | undefined;

  /** @internal Made by `Repository.query`. */
  constructor(
    database: Database<DatabaseOf<C>>,
    model: C,
    build: (qb: ModelSelect<C>) => SelectQueryBuilder<unknown, never, unknown>,
    paths: readonly string[],
    cache?: ModelCacheOptions,
  ) {
    this.#database = database;
    this.#model = model;
    this.#build = build;
    this.#paths = paths;
    this.#cache = cache;
  }

  /** Also loads the relation at `path` (`'posts'`, `'posts.comments'`): one query per level. */
  with<P extends RelationPath<C> & string>(path: P): ModelQuery<C, R & Loaded<C, P>> {
    return new ModelQuery(this.#database, this.#model, this.#build, [...this.#paths, path], this.#cache);
  }

  /**
   * Reads the rows through `cache` (a query cache of this database): a stored result if
   * there is one, else the query, stored for `ttlMs`. Instances are made from the rows
   * either way (`instanceof` holds, and `update()` writes only what changed since). Relations
   * asked for with `with()` are loaded from the database, not cached.
   */
  cached(cache: AnyQueryCache, options: { readonly ttlMs?: number } = {}): ModelQuery<C, R> {
    checkCacheOf(this.#database, cache);
    return new ModelQuery(this.#database, this.#model, this.#build, this.#paths, {
      cache,
      ...(options.ttlMs !== undefined ? { ttlMs: options.ttlMs } : {}),
    });
  }

  /** The SQL the main query compiles to (relations add one query per level). */
  compile(): { readonly sql: string; readonly parameters: readonly unknown[] } {
    return this.#select(this.#database.db).compile();
  }

  async execute(): Promise<R[]> {
    // Resolved now, not when the query was built: joins the transaction it runs in.
    const kysely = currentKysely(this.#database.db);
    const select = this.#select(kysely);
    const cache = this.#cache;
    const rows = (
      cache === undefined ? await select.execute() : await cache.cache.execute(select, cache.ttlMs !== undefined ? { ttlMs: cache.ttlMs } : {})
    ) as ReadonlyArray<Record<string, unknown>>;
    const model = this.#model;
    const instances = hydrateAll(model, rows) as Array<InstanceOf<C>>;
    if (this.#paths.length > 0 && instances.length > 0) {
      await loadRelations(kysely as unknown as Kysely<LooseDB>, model, instances, this.#paths);
    }
    return instances as unknown as R[];
  }

  async executeTakeFirst(): Promise<R | undefined> {
    return (await this.execute())[0];
  }

  async executeTakeFirstOrThrow(): Promise<R> {
    const [first] = await this.execute();
    if (first === undefined) throw new ModelNotFoundError(`No ${this.#model.name} matched the query.`);
    return first;
  }

  #select(kysely: Kysely<DatabaseOf<C>>): SelectQueryBuilder<unknown, never, unknown> {
    const loose = kysely as unknown as Kysely<LooseDB>;
    const table = this.#model.table;
    const base = loose.selectFrom(table).selectAll(table) as unknown as ModelSelect<C>;
    return this.#build(base);
  }
}

/** A cache of another database would not hear of this database's writes. */
function checkCacheOf(database: object, cache: { readonly database: object } | undefined): void {
  if (cache?.database !== database) {
    throw new InvalidOptionError('cache', "expected a query cache of the repository's own database (createQueryCache(database, ...)).");
  }
}

/** Properties that are not columns: the relations a model declares (and may have loaded). */
function relationNames(model: AnyModelClass): ReadonlySet<string> {
  return new Set(Object.keys(relationsOf(model)));
}

/** Binds `model` to `database`: `const users = repository(database, User)`. */
/** Runs `work` in a savepoint of an open transaction, so that its failure undoes only its writes. */
async function insertAndReadBackInSavepoint<T>(trx: Transaction<LooseDB>, work: (trx: Kysely<LooseDB>) => Promise<T>): Promise<T> {
  const name = sql.raw(`sluice_model_insert`);
  await sql`SAVEPOINT ${name}`.execute(trx);
  try {
    const result = await work(trx);
    await sql`RELEASE SAVEPOINT ${name}`.execute(trx);
    return result;
  } catch (error) {
    await withoutDeadline(() => sql`ROLLBACK TO SAVEPOINT ${name}`.execute(trx)).catch(() => {});
    throw error;
  }
}

export function repository<C extends AnyModelClass>(database: Database<DatabaseOf<C>>, model: C): Repository<C> {
  type Row = Record<string, unknown>;
  const table = model.table;
  const primaryKey = model.primaryKey;
  const skip = relationNames(model);
  const plugin = new HydratePlugin(model);
  // Kysely over the tables named at run time, in the transaction open here if any.
  const loose = (): Kysely<LooseDB> => currentKysely(database.db) as unknown as Kysely<LooseDB>;
  const make = (row: Row): InstanceOf<C> => hydrate(model, row) as InstanceOf<C>;
  const identity = (qb: ModelSelect<C>): SelectQueryBuilder<unknown, never, unknown> =>
    qb as unknown as SelectQueryBuilder<unknown, never, unknown>;

  /** RETURNING where the database has it (PostgreSQL, SQLite); MySQL/MariaDB: insertId, then a read. */
  const insertRows = async (values: readonly Row[]): Promise<Row[]> => {
    if (values.length === 0) return [];
    const kysely = loose();
    if (kysely.getExecutor().adapter.supportsReturning) {
      return kysely.insertInto(table).values(values as Row[]).returningAll().execute();
    }
    const given = values.filter((row) => row[primaryKey] !== undefined && row[primaryKey] !== null).length;
    if (given !== 0 && given !== values.length) {
      // An explicit key moves AUTO_INCREMENT on: the generated ones would not follow insertId.
      throw new InvalidOptionError(
        'values',
        `on MySQL, give ${primaryKey} in every row of one insertMany or in none (or insert those rows separately).`,
      );
    }
    // The INSERT, the server's AUTO_INCREMENT step and the read-back on one connection, in
    // one transaction (a savepoint inside one): ids that cannot be worked out roll the rows back.
    const insertAndReadBack = async (trx: Kysely<LooseDB>): Promise<Row[]> => {
      const result = await trx.insertInto(table).values(values as Row[]).executeTakeFirstOrThrow();
      // One multi-row INSERT takes AUTO_INCREMENT values from insertId, each the step
      // (auto_increment_increment: 1 usually, more on multi-primary setups) after the last
      // (InnoDB, innodb_autoinc_lock_mode 0 or 1, and 2 without concurrent inserts).
      // A row given its own key keeps it.
      const { rows: settings } = await sql<{ step: number | string }>`SELECT @@session.auto_increment_increment AS step`.execute(trx);
      const step = BigInt(settings[0]?.step ?? 1);
      let next = result.insertId;
      const ids = values.map((row) => {
        if (row[primaryKey] !== undefined && row[primaryKey] !== null) return row[primaryKey];
        if (next === undefined || next === 0n) {
          throw new SluiceError('MODEL_NO_ID', `The INSERT into ${table} generated no id (no AUTO_INCREMENT key?): give ${primaryKey} a value. Nothing was inserted.`);
        }
        const id = next;
        next += step;
        return Number.isSafeInteger(Number(id)) ? Number(id) : id;
      });
      const rows = await trx.selectFrom(table).selectAll().where(primaryKey, 'in', ids).execute();
      const byId = new Map(rows.map((row) => [String(row[primaryKey]), row]));
      return ids.map((id) => {
        const row = byId.get(String(id));
        if (row === undefined) {
          throw new SluiceError('MODEL_NO_ID', `The row inserted into ${table} with ${primaryKey} ${String(id)} could not be read back. Nothing was inserted.`);
        }
        return row;
      });
    };
    return kysely.isTransaction
      ? insertAndReadBackInSavepoint(kysely as unknown as Transaction<LooseDB>, insertAndReadBack)
      : kysely.transaction().execute(insertAndReadBack);
  };

  const keyWhere = (instance: InstanceOf<C>): unknown => {
    const snapshot = instance[SNAPSHOT];
    // The key as loaded: changing the primary key of an instance moves its row.
    const key = snapshot !== undefined && primaryKey in snapshot ? snapshot[primaryKey] : (instance as unknown as Row)[primaryKey];
    if (key === undefined || key === null) {
      throw new ModelNotFoundError(`This ${model.name} has no ${primaryKey}: insert it with insert() first.`);
    }
    return key;
  };

  return {
    model,
    query: ((build?: (qb: ModelSelect<C>) => SelectQueryBuilder<unknown, never, unknown>) =>
      new ModelQuery<C, InstanceOf<C>>(database, model, build ?? identity, [])) as Repository<C>['query'],
    selectFrom: () =>
      loose().withPlugin(plugin).selectFrom(table).selectAll(table) as unknown as SelectQueryBuilder<DatabaseOf<C>, TableOf<C>, InstanceOf<C>>,
    find: async (id, options) => {
      const select = loose().selectFrom(table).selectAll().where(primaryKey, '=', id);
      let row: Row | undefined;
      if (options === undefined) row = await select.executeTakeFirst();
      else {
        checkCacheOf(database, options.cache);
        row = await options.cache.executeTakeFirst(select, options.ttlMs !== undefined ? { ttlMs: options.ttlMs } : {});
      }
      return row === undefined ? undefined : make(row);
    },
    hydrate: (rows) => hydrateAll(model, rows as ReadonlyArray<Row>) as Array<InstanceOf<C>>,
    load: async (instances, path) => {
      if (instances.length > 0) await loadRelations(loose(), model, instances, [path]);
      return instances as Array<(typeof instances)[number] & Loaded<C, typeof path>>;
    },
    insert: async (values) => make((await insertRows([values as Row]))[0]!),
    insertMany: async (values) => (await insertRows(values as readonly Row[])).map(make),
    update: async (instance) => {
      const changed = changedColumns(instance, skip);
      const columns = Object.keys(changed);
      if (columns.length === 0) return 0;
      const result = await loose().updateTable(table).set(changed).where(primaryKey, '=', keyWhere(instance)).executeTakeFirst();
      if (result.numUpdatedRows === 0n) {
        throw new ModelNotFoundError(`No ${table} row has ${primaryKey} ${String(keyWhere(instance))} any more: nothing was updated.`);
      }
      instance[SNAPSHOT] = snapshotOf({ ...instance[SNAPSHOT], ...changed });
      return columns.length;
    },
    delete: async (instance) => {
      const key = keyWhere(instance);
      const result = await loose().deleteFrom(table).where(primaryKey, '=', key).executeTakeFirst();
      if (result.numDeletedRows === 0n) {
        throw new ModelNotFoundError(`No ${table} row has ${primaryKey} ${String(key)}: nothing was deleted.`);
      }
      // Inserting it again is allowed; updating it is not.
      instance[SNAPSHOT] = undefined;
    },
  };
}

/**
 * Repositories for several models at once: `const { users, posts } = models(database, { users: User, posts: Post })`.
 */
export function models<DB, M extends Readonly<Record<string, AnyModelClass>>>(
  database: Database<DB>,
  classes: M,
): { readonly [K in keyof M]: Repository<M[K]> } {
  const out: Record<string, Repository<AnyModelClass>> = {};
  for (const [name, model] of Object.entries(classes)) {
    out[name] = repository(database as unknown as Database<DatabaseOf<AnyModelClass>>, model);
  }
  return out as unknown as { readonly [K in keyof M]: Repository<M[K]> };
}
