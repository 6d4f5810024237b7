import type {
  KyselyPlugin,
  PluginTransformQueryArgs,
  PluginTransformResultArgs,
  QueryResult,
  RootOperationNode,
  UnknownRow,
} from 'kysely';
import { type AnyModelClass, hydrateAll } from './model.js';

/**
 * Turns every row a query returns into an instance of `model`. What lets
 * `users.selectFrom()` stay a plain Kysely builder (every method, every type) and still
 * come back as instances.
 */
export class HydratePlugin implements KyselyPlugin {
  readonly #model: AnyModelClass;

  constructor(model: AnyModelClass) {
    this.#model = model;
  }

  transformQuery(args: PluginTransformQueryArgs): RootOperationNode {
    return args.node;
  }

  async transformResult(args: PluginTransformResultArgs): Promise<QueryResult<UnknownRow>> {
    const { result } = args;
    if (result.rows.length === 0) return result;
    return { ...result, rows: hydrateAll(this.#model, result.rows) as unknown as UnknownRow[] };
  }
}
