import { connect, type Socket } from 'node:net';

/** Where the server listens: a TCP host and port, or a Unix socket directory. */
export interface PostgresEndpoint {
  readonly host: string;
  readonly port: number;
}

/** The request code of a CancelRequest (1234 << 16 | 5678), from the protocol spec. */
const CANCEL_REQUEST_CODE = 80877102;

/**
 * Asks the server to cancel whatever statement a backend is running, with the wire
 * protocol's CancelRequest: a 16-byte message on a new connection (no pooled connection,
 * no authentication; the backend's pid and secret key are the credential). Resolves when
 * the server has taken the request and closed the socket, or after `timeoutMs`; never
 * rejects: a cancel that cannot be delivered is reported by the caller's own fallback.
 */
export function sendCancelRequest(
  endpoint: PostgresEndpoint,
  processId: number,
  secretKey: number,
  timeoutMs: number,
): Promise<boolean> {
  return new Promise((resolve) => {
    const socket: Socket = endpoint.host.startsWith('/')
      ? connect(`${endpoint.host}/.s.PGSQL.${endpoint.port}`)
      : connect(endpoint.port, endpoint.host);
    let delivered = false;
    const finish = (ok: boolean): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    socket.setNoDelay(true);
    socket.once('connect', () => {
      const message = Buffer.alloc(16);
      message.writeInt32BE(16, 0);
      message.writeInt32BE(CANCEL_REQUEST_CODE, 4);
      message.writeInt32BE(processId, 8);
      message.writeInt32BE(secretKey, 12);
      socket.end(message, () => {
        delivered = true;
      });
    });
    // The server closes the connection once it has signalled the backend.
    socket.once('close', () => finish(delivered));
    socket.once('error', () => finish(false));
  });
}
