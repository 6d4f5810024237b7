import { describe, expect, test } from 'vitest';
import { changedColumns, defineModels, hydrate, hydrateAll } from '../../src/orm/model/model.js';

interface DB {
  things: { id: number; name: string; meta: { n: number }; at: Date; bytes: Uint8Array };
}

const Model = defineModels<DB>();
class Thing extends Model('things') {
  // A field the class declares without a value: an own `undefined` property, not a column.
  cache?: string;
}

const row = (): DB['things'] => ({ id: 1, name: 'a', meta: { n: 1 }, at: new Date(0), bytes: Buffer.from([1, 2]) });
const none = new Set<string>();

describe('which columns an update writes', () => {
  test('nothing, just after loading, even with a declared field', () => {
    for (const thing of [hydrate(Thing, row()), hydrateAll(Thing, [row()])[0]!]) {
      expect(changedColumns(thing, none)).toEqual({});
    }
  });

  test('objects edited in place count as changed: JSON, dates, bytes', () => {
    const thing = hydrate(Thing, row());
    thing.meta.n = 2;
    thing.at.setUTCFullYear(2030);
    thing.bytes[0] = 9;
    expect(Object.keys(changedColumns(thing, none)).sort()).toEqual(['at', 'bytes', 'meta']);
  });

  test('a value set back to what was loaded is unchanged; a new one is written', () => {
    const thing = hydrate(Thing, row());
    thing.name = 'b';
    thing.name = 'a';
    thing.at = new Date(0);
    expect(changedColumns(thing, none)).toEqual({});
    thing.name = 'c';
    expect(changedColumns(thing, none)).toEqual({ name: 'c' });
  });
});
