/**
 * Rows to text and back, exactly: what JSON cannot say (a Date, a bigint, bytes, NaN, -0,
 * undefined) is written as a tagged object, `{"$sluice": tag, "v": ...}`, and read back as
 * itself. A plain object (a JSON column) that happens to have a `$sluice` key is wrapped
 * (`{"$sluice": "object", "v": {...}}`), so no stored value is ever mistaken for a tag.
 *
 * Both directions walk the value themselves, top-down, rather than through
 * `JSON.stringify`'s replacer and `JSON.parse`'s reviver: a replacer sees a Date only after
 * `toJSON` has made it a string, and a reviver works bottom-up, so it would read the inside
 * of a wrapped object as tags before seeing the wrapper.
 */

/** The key marking a tagged value. */
const TAG = '$sluice';
/** Deeper than this is not a row (a cycle, most likely): not cached. */
const MAX_DEPTH = 200;

/** A value the codec cannot write exactly (a Map, a class instance, a function, a symbol, a cycle). */
export class UnencodableValueError extends Error {
  constructor(what: string) {
    super(`cannot cache a value of type ${what}`);
  }
}

/**
 * The text for `value` (rows, or a query's parameters); throws `UnencodableValueError` for a
 * value it cannot read back exactly.
 */
export function encodeValue(value: unknown): string {
  return JSON.stringify(toJsonSafe(value, 0));
}

/** The value `encodeValue` wrote: Dates as `Date`, bigints as `bigint`, bytes as `Buffer` (or `Uint8Array`). */
export function decodeValue(text: string): unknown {
  return fromJsonSafe(JSON.parse(text) as unknown);
}

function tagged(tag: string, v: unknown): Record<string, unknown> {
  return { [TAG]: tag, v };
}

function toJsonSafe(value: unknown, depth: number): unknown {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return value;
    case 'number':
      // JSON writes NaN and ±Infinity as null, and -0 as 0.
      if (Object.is(value, -0)) return tagged('number', '-0');
      return Number.isFinite(value) ? value : tagged('number', String(value));
    case 'bigint':
      return tagged('bigint', value.toString());
    case 'undefined':
      return tagged('undefined', null);
    case 'object':
      break;
    default:
      throw new UnencodableValueError(typeof value);
  }
  if (value === null) return null;
  if (depth > MAX_DEPTH) throw new UnencodableValueError('object nested too deep');
  if (Array.isArray(value)) {
    const out = new Array<unknown>(value.length);
    for (let i = 0; i < value.length; i++) out[i] = toJsonSafe(value[i], depth + 1);
    return out;
  }
  if (value instanceof Date) {
    // getTime(), not toISOString(): an invalid Date (NaN) round-trips too.
    return tagged('date', String(value.getTime()));
  }
  if (Buffer.isBuffer(value)) return tagged('buffer', value.toString('base64'));
  if (value instanceof Uint8Array) return tagged('bytes', Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('base64'));
  const prototype = Object.getPrototypeOf(value) as unknown;
  if (prototype !== Object.prototype && prototype !== null) {
    throw new UnencodableValueError((value as object).constructor?.name ?? 'object');
  }
  // No prototype: a `__proto__` key (a JSON column may have one) stays a key.
  const out = Object.create(null) as Record<string, unknown>;
  for (const key of Object.keys(value)) out[key] = toJsonSafe((value as Record<string, unknown>)[key], depth + 1);
  return Object.hasOwn(out, TAG) ? tagged('object', out) : out;
}

function fromJsonSafe(value: unknown): unknown {
  if (value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) value[i] = fromJsonSafe(value[i]);
    return value;
  }
  const record = value as Record<string, unknown>;
  if (Object.hasOwn(record, TAG)) {
    const v = record['v'];
    switch (record[TAG]) {
      case 'number':
        return Number(v);
      case 'bigint':
        return BigInt(v as string);
      case 'undefined':
        return undefined;
      case 'date':
        return new Date(Number(v));
      case 'buffer':
        return Buffer.from(v as string, 'base64');
      case 'bytes':
        return new Uint8Array(Buffer.from(v as string, 'base64'));
      case 'object':
        return fromPlainObject(v as Record<string, unknown>);
      default:
        // Only encodeValue writes this key at the top of an object: a tag it does not know
        // is a corrupt or foreign entry.
        throw new Error(`unknown tag in a cached entry`);
    }
  }
  return fromPlainObject(record);
}

/** Decodes the properties of an object known to be plain (its own `$sluice` key is data). */
function fromPlainObject(record: Record<string, unknown>): Record<string, unknown> {
  for (const key of Object.keys(record)) record[key] = fromJsonSafe(record[key]);
  return record;
}
