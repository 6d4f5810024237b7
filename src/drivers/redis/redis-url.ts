import { InvalidOptionError } from '../../errors.js';

/** Where a `redis://` or `rediss://` URL points, and with which credentials. */
export interface RedisTarget {
  readonly host: string;
  readonly port: number;
  /** The logical database (`SELECT`), from the URL's path; 0 when it names none. */
  readonly db: number;
  readonly username: string | undefined;
  readonly password: string | undefined;
  /** `rediss://`: TLS. */
  readonly tls: boolean;
}

const EXPECTED = 'expected redis://[user:password@]host[:port][/db] or rediss://...';

/**
 * Reads `redis://[user:password@]host[:port][/db]` (`rediss://` for TLS). User and password
 * are percent-decoded; `redis://:password@host` gives a password alone (Redis's `default`
 * user). A query string is refused rather than silently ignored. The URL is never quoted in
 * an error: it may hold a password.
 */
export function parseRedisUrl(url: string): RedisTarget {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new InvalidOptionError('url', `not a valid URL (${EXPECTED}).`);
  }
  if (parsed.protocol !== 'redis:' && parsed.protocol !== 'rediss:') {
    throw new InvalidOptionError('url', `unsupported protocol ${parsed.protocol}: ${EXPECTED}.`);
  }
  if (parsed.search !== '' || parsed.hash !== '') {
    throw new InvalidOptionError('url', 'a redis:// URL takes no ?query or #fragment: pass settings as options.');
  }
  const host = parsed.hostname.startsWith('[') ? parsed.hostname.slice(1, -1) : parsed.hostname;
  if (host === '') throw new InvalidOptionError('url', `names no host (${EXPECTED}).`);
  const path = parsed.pathname.replace(/^\/+/, '').replace(/\/+$/, '');
  if (path !== '' && !/^\d{1,9}$/.test(path)) {
    throw new InvalidOptionError('url', 'its path must be a database number (redis://host:6379/0).');
  }
  const decode = (part: string): string | undefined => {
    if (part === '') return undefined;
    try {
      return decodeURIComponent(part);
    } catch {
      throw new InvalidOptionError('url', 'its user or password is not valid percent-encoding.');
    }
  };
  return {
    host,
    port: parsed.port === '' ? 6379 : Number(parsed.port),
    db: path === '' ? 0 : Number(path),
    username: decode(parsed.username),
    password: decode(parsed.password),
    tls: parsed.protocol === 'rediss:',
  };
}

/** `127.0.0.1:6379/0`, `[::1]:6379/2`: where a target is, never its credentials. */
export function describeRedisTarget(target: RedisTarget): string {
  const host = target.host.includes(':') ? `[${target.host}]` : target.host;
  return `${host}:${target.port}/${target.db}`;
}
