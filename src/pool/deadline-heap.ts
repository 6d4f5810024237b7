/** Something with a deadline that may stop mattering before it comes. */
export interface Expiring {
  readonly deadline: number;
  readonly settled: boolean;
}

/**
 * A binary min-heap on `deadline`, so the pool needs one timer for all of its waiters
 * instead of one each. Entries settled by other means (served, aborted) are removed
 * lazily: skipped when they surface at the top, and swept out when they outnumber the
 * live ones, so the heap stays O(live entries) in size and O(1) amortised per entry.
 */
export class DeadlineHeap<T extends Expiring> {
  #items: T[] = [];
  #live = 0;

  /** Entries still unsettled, as counted by `push` and `forget`. */
  get live(): number {
    return this.#live;
  }

  push(item: T): void {
    const items = this.#items;
    let index = items.length;
    items.push(item);
    while (index > 0) {
      const parent = (index - 1) >> 1;
      const above = items[parent]!;
      if (above.deadline <= item.deadline) break;
      items[index] = above;
      index = parent;
    }
    items[index] = item;
    this.#live++;
  }

  /** Tells the heap an entry was settled elsewhere; it will be dropped lazily. */
  forget(): void {
    this.#live--;
    if (this.#live === 0) this.#items.length = 0;
    else if (this.#items.length > 64 && this.#items.length > 4 * this.#live) this.#compact();
  }

  /** The earliest deadline among live entries, or `Infinity`. Drops settled entries on top. */
  peekDeadline(): number {
    const items = this.#items;
    while (items.length > 0 && items[0]!.settled) this.#popTop();
    return items.length > 0 ? items[0]!.deadline : Infinity;
  }

  /** Removes and returns the live entry with the earliest deadline if it is due at `now`. */
  popDue(now: number): T | undefined {
    if (this.peekDeadline() > now) return undefined;
    const top = this.#popTop();
    this.#live--;
    return top;
  }

  clear(): void {
    this.#items.length = 0;
    this.#live = 0;
  }

  #popTop(): T {
    const items = this.#items;
    const top = items[0]!;
    const last = items.pop()!;
    if (items.length > 0) {
      items[0] = last;
      this.#siftDown(0);
    }
    return top;
  }

  #siftDown(start: number): void {
    const items = this.#items;
    const item = items[start]!;
    const length = items.length;
    let index = start;
    for (;;) {
      let child = 2 * index + 1;
      if (child >= length) break;
      const right = child + 1;
      if (right < length && items[right]!.deadline < items[child]!.deadline) child = right;
      if (items[child]!.deadline >= item.deadline) break;
      items[index] = items[child]!;
      index = child;
    }
    items[index] = item;
  }

  #compact(): void {
    const items = this.#items.filter((item) => !item.settled);
    this.#items = items;
    for (let index = (items.length >> 1) - 1; index >= 0; index--) this.#siftDown(index);
  }
}
