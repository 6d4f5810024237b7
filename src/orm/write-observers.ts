/**
 * What a query cache hears of the statements a database runs (see `observeWrites` in
 * connect.ts): the tables each Kysely-built write changes, and when its changes become
 * visible to other connections.
 *
 * The connection reads `WriteObservers.current` once per statement: with no cache attached
 * it is `undefined`, and nothing else is done.
 */

export interface WriteObserver {
  /**
   * `tables` were written by a statement outside any transaction (after it settled, failed
   * ones too: a cancelled statement may have run to its end on the server), or by a
   * transaction that just committed. Awaited before the write's caller hears back, so that a
   * read made after the write is not answered from before it. Never rejects.
   */
  written(tables: readonly string[]): Promise<void>;
  /**
   * A transaction of this process began writing `tables` (+1), or ended (-1): until it has,
   * reads of them skip the cache (they would see, or store, a state that is not committed).
   */
  pending(tables: readonly string[], delta: 1 | -1): void;
  /**
   * A read ran on a transaction's connection, in the async context of the caller that made
   * it: its rows must not be stored (they may be uncommitted, or an older snapshot).
   */
  readInTransaction(): void;
}

/** The observers of one database. */
export class WriteObservers {
  readonly #list: WriteObserver[] = [];
  /** The observers as one, or `undefined` when there are none (the only check made per statement then). */
  current: WriteObserver | undefined;

  /** Adds `observer`; the function returned removes it. */
  add(observer: WriteObserver): () => void {
    this.#list.push(observer);
    this.#update();
    return () => {
      const index = this.#list.indexOf(observer);
      if (index >= 0) this.#list.splice(index, 1);
      this.#update();
    };
  }

  #update(): void {
    const list = [...this.#list];
    this.current =
      list.length === 0
        ? undefined
        : list.length === 1
          ? list[0]
          : {
              written: async (tables) => {
                await Promise.all(list.map((observer) => observer.written(tables)));
              },
              pending: (tables, delta) => {
                for (const observer of list) observer.pending(tables, delta);
              },
              readInTransaction: () => {
                for (const observer of list) observer.readInTransaction();
              },
            };
  }
}

/** A transaction's writes, as its connection records them. */
export interface TransactionWrites {
  /** Tables written so far. */
  readonly tables: Set<string>;
  /** The observer told they are pending (told again when the transaction ends). */
  observer: WriteObserver | undefined;
}
