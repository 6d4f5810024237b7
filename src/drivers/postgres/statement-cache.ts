/**
 * Names for prepared statements on one connection, least recently used first out.
 *
 * A named statement is parsed and planned once per connection and then only bound and
 * executed, which saves the server a parse per query. PostgreSQL keeps every named
 * statement until the connection closes, so the cache is bounded: the one evicted is
 * returned, for the caller to DEALLOCATE.
 */
export class StatementCache {
  readonly #capacity: number;
  readonly #names = new Map<string, string>();
  #next = 0;

  constructor(capacity: number) {
    this.#capacity = capacity;
  }

  get size(): number {
    return this.#names.size;
  }

  /**
   * The statement name for `sql`, and the name evicted to make room for it, if any.
   * `undefined` when the cache is disabled (capacity 0).
   */
  nameFor(sql: string): { readonly name: string; readonly evicted: string | undefined } | undefined {
    if (this.#capacity === 0) return undefined;
    const known = this.#names.get(sql);
    if (known !== undefined) {
      // Re-insert: Map iteration order is insertion order, so the first entry is the LRU one.
      this.#names.delete(sql);
      this.#names.set(sql, known);
      return { name: known, evicted: undefined };
    }
    let evicted: string | undefined;
    if (this.#names.size >= this.#capacity) {
      const [oldestSql, oldestName] = this.#names.entries().next().value as [string, string];
      this.#names.delete(oldestSql);
      evicted = oldestName;
    }
    const name = `sluice_${this.#next++}`;
    this.#names.set(sql, name);
    return { name, evicted };
  }

  /** Forgets `sql` (its plan went stale); returns the name to DEALLOCATE. */
  forget(sql: string): string | undefined {
    const name = this.#names.get(sql);
    this.#names.delete(sql);
    return name;
  }
}
