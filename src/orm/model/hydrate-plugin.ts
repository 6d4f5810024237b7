import { AsyncLocalStorage } from 'node:async_hooks';
import type {
  KyselyPlugin,
  PluginTransformQueryArgs,
  PluginTransformResultArgs,
  QueryId,
  QueryResult,
  RootOperationNode,
  UnknownRow,
} from 'kysely';
import { type AnyModelClass, hydrateAll } from './model.js';

/** The key of the mark on a query whose rows the plugin turns into instances: the model. */
const HYDRATES: unique symbol = Symbol('sluice.model.hydrates');

/** The query (by id) whose rows the plugin gives back as they are, for the run of `rowsOf`. */
const asRows = new AsyncLocalStorage<string>();

/**
 * Turns every row a query returns into an instance of `model`. What lets
 * `users.selectFrom()` stay a plain Kysely builder (every method, every type) and still
 * come back as instances.
 *
 * It marks the queries it transforms (their root node carries the model under a symbol
 * key, which Kysely's compilers do not read): the query cache keys, stores and reads such a
 * query's rows, not its instances, and makes the instances itself (see `hydratedModel`).
 */
export class HydratePlugin implements KyselyPlugin {
  readonly #model: AnyModelClass;

  constructor(model: AnyModelClass) {
    this.#model = model;
  }

  transformQuery(args: PluginTransformQueryArgs): RootOperationNode {
    // A copy, frozen as Kysely's nodes are: the builder's own node is shared by every query built from it.
    return Object.freeze({ ...args.node, [HYDRATES]: this.#model });
  }

  async transformResult(args: PluginTransformResultArgs): Promise<QueryResult<UnknownRow>> {
    const { result } = args;
    if (result.rows.length === 0 || asRows.getStore() === args.queryId.queryId) return result;
    return { ...result, rows: hydrateAll(this.#model, result.rows) as unknown as UnknownRow[] };
  }
}

/**
 * The model whose instances a compiled query's rows become (`compiled.query`), if a
 * HydratePlugin transformed it. A plugin added to the builder after it that rebuilds the
 * tree (CamelCasePlugin) drops the mark.
 */
export function hydratedModel(node: RootOperationNode): AnyModelClass | undefined {
  return (node as { readonly [HYDRATES]?: AnyModelClass })[HYDRATES];
}

/** Runs `work`, in which the query `queryId` (a marked one) gives back its rows rather than instances. */
export function rowsOf<T>(queryId: QueryId, work: () => Promise<T>): Promise<T> {
  return asRows.run(queryId.queryId, work);
}
