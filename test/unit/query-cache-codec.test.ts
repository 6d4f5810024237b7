import { describe, expect, test } from 'vitest';
import { decodeValue, encodeValue, UnencodableValueError } from '../../src/orm/cache/cache-codec.js';

const roundTrip = (value: unknown): unknown => decodeValue(encodeValue(value));

describe('query cache codec', () => {
  test('rows with Date, bigint, Buffer, Uint8Array, null round-trip exactly', () => {
    const rows = [
      {
        id: 1,
        at: new Date('2024-02-29T12:34:56.789Z'),
        big: 2n ** 70n,
        negative: -(2n ** 63n),
        bytes: Buffer.from([0, 1, 2, 255]),
        raw: new Uint8Array([9, 8, 7]),
        none: null,
        name: 'Ada',
        ok: true,
        ratio: 0.1,
      },
    ];
    const back = roundTrip(rows) as Array<Record<string, unknown>>;
    expect(back).toEqual(rows);
    const row = back[0]!;
    expect(row['at']).toBeInstanceOf(Date);
    expect((row['at'] as Date).getTime()).toBe(rows[0]!.at.getTime());
    expect(typeof row['big']).toBe('bigint');
    expect(row['big']).toBe(2n ** 70n);
    expect(Buffer.isBuffer(row['bytes'])).toBe(true);
    expect(Buffer.isBuffer(row['raw'])).toBe(false);
    expect(row['raw']).toBeInstanceOf(Uint8Array);
    expect([...(row['raw'] as Uint8Array)]).toEqual([9, 8, 7]);
    expect(row['none']).toBeNull();
  });

  test('a Uint8Array view of part of a buffer keeps only its own bytes', () => {
    const whole = new Uint8Array([1, 2, 3, 4, 5]);
    const back = roundTrip({ v: whole.subarray(1, 3) }) as { v: Uint8Array };
    expect([...back.v]).toEqual([2, 3]);
  });

  test('numbers JSON cannot say: NaN, Infinity, -0; undefined; invalid dates', () => {
    const back = roundTrip({ a: NaN, b: Infinity, c: -Infinity, d: -0, e: undefined, f: new Date(NaN) }) as Record<string, unknown>;
    expect(back['a']).toBeNaN();
    expect(back['b']).toBe(Infinity);
    expect(back['c']).toBe(-Infinity);
    expect(Object.is(back['d'], -0)).toBe(true);
    expect('e' in back).toBe(true);
    expect(back['e']).toBeUndefined();
    expect(Number.isNaN((back['f'] as Date).getTime())).toBe(true);
  });

  test('JSON columns: nested objects and arrays, and an object whose own key is the tag', () => {
    const meta = { tags: ['a', 'b'], nested: { $sluice: 'date', v: '0' }, deep: [{ $sluice: 'bigint', v: '1' }] };
    const back = roundTrip([{ meta }]) as Array<{ meta: typeof meta }>;
    expect(back[0]!.meta).toEqual(meta);
    expect(back[0]!.meta.nested).not.toBeInstanceOf(Date);
    expect(typeof back[0]!.meta.deep[0]!.v).toBe('string');
  });

  test('a __proto__ key stays a key', () => {
    const value = JSON.parse('{"__proto__": {"polluted": true}, "x": 1}') as Record<string, unknown>;
    const back = roundTrip(value) as Record<string, unknown>;
    expect(Object.getPrototypeOf(back)).toBe(Object.prototype);
    expect(Object.hasOwn(back, '__proto__')).toBe(true);
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
  });

  test('values it cannot write exactly are refused, not mangled', () => {
    class Money {
      cents = 1;
    }
    for (const value of [new Map(), new Set([1]), new Money(), () => 1, Symbol('s'), [{ at: new Map() }]]) {
      expect(() => encodeValue(value)).toThrow(UnencodableValueError);
    }
    const cycle: Record<string, unknown> = {};
    cycle['self'] = cycle;
    expect(() => encodeValue(cycle)).toThrow(UnencodableValueError);
  });

  test('the same parameters encode to the same text (cache keys)', () => {
    const at = new Date(1_700_000_000_000);
    expect(encodeValue([1, 'a', at, 5n])).toBe(encodeValue([1, 'a', new Date(at.getTime()), 5n]));
    expect(encodeValue([1])).not.toBe(encodeValue(['1']));
    expect(encodeValue([5n])).not.toBe(encodeValue(['5']));
  });
});
