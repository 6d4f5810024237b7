/**
 * How rows are shown to API clients, without anything of sluice: the models use these, and
 * so does the benchmark's baseline service (bench/service-baseline.ts), which must answer
 * the same JSON.
 */

/**
 * A `created_at` as ISO 8601 in UTC. PostgreSQL (`timestamptz`) and MySQL give a Date;
 * SQLite gives `CURRENT_TIMESTAMP`'s text, `YYYY-MM-DD HH:MM:SS` in UTC.
 */
export function isoTime(value: Date | string): string {
  if (value instanceof Date) return value.toISOString();
  return new Date(`${value.replace(' ', 'T')}Z`).toISOString();
}

/** The first line of a body, cut at 120 characters: what a list shows. */
export function excerptOf(body: string): string {
  const firstLine = body.split('\n', 1)[0] ?? '';
  return firstLine.length <= 120 ? firstLine : `${firstLine.slice(0, 119)}…`;
}

/**
 * A title as a URL path segment: `Hello, World!` → `hello-world`, `Crème brûlée` →
 * `creme-brulee` (accents dropped, not turned into hyphens). Letters of other scripts are
 * kept as they are (`東京` → `東京`); only what is neither a letter nor a digit separates.
 */
export function slugOf(title: string): string {
  return title
    .normalize('NFKD')
    .replace(/\p{M}+/gu, '')
    .toLowerCase()
    .replace(/[^\p{L}\p{N}]+/gu, '-')
    .replace(/^-+|-+$/g, '');
}

/** Tag names as stored: trimmed, lower case, each once, sorted. */
export function normalTags(names: readonly string[]): string[] {
  return [...new Set(names.map(normalTag))].sort();
}

export const normalTag = (name: string): string => name.trim().toLowerCase();
