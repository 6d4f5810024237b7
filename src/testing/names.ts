/**
 * Names of the databases a test run makes: `sluice_t<time><random>` for the run, then
 * `_template` for its template and a random suffix for each test file's database. The time
 * (base 36 milliseconds) lets a later run drop what a killed run left behind.
 */
import { randomBytes } from 'node:crypto';

const PREFIX = 'sluice_t';
/**
 * A run's databases older than this are a killed run's leftovers: no test run (a watch
 * session left open overnight included) lasts a day.
 */
export const STALE_AFTER_MS = 24 * 60 * 60 * 1000;

function randomSuffix(bytes: number): string {
  return randomBytes(bytes).toString('hex');
}

/** A new run's id, which prefixes the names of all its databases. */
export function newRunId(now = Date.now()): string {
  return `${PREFIX}${now.toString(36).padStart(9, '0')}${randomSuffix(2)}`;
}

export const templateName = (runId: string): string => `${runId}_template`;
export const fileDatabaseName = (runId: string): string => `${runId}_${randomSuffix(4)}`;

/** True for a database some run made more than `STALE_AFTER_MS` before `now`. */
export function isStale(name: string, now = Date.now()): boolean {
  const match = /^sluice_t([0-9a-z]{9})[0-9a-f]{4}_/.exec(name);
  if (match === null) return false;
  return now - Number.parseInt(match[1]!, 36) > STALE_AFTER_MS;
}

/** The URL of database `name` on the server `serverUrl` names (same user, password and settings). */
export function urlOfDatabase(serverUrl: string, name: string): string {
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  return url.toString();
}
