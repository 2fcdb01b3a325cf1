import { createServer, connect, type Server, type Socket } from 'node:net';
import { BangerError, ErrorCode } from '../core/errors.js';

/**
 * A TCP forwarder: a listener on a host address that connects each accepted client to a
 * target (a guest's bridge address) and copies bytes both ways, with backpressure (pipe).
 *
 * Contract:
 * - `listen` binds or throws E_IN_USE (address taken) / E_NETWORK naming the address; nothing
 *   is left listening on failure.
 * - Each connection is independent: a target that refuses, resets, or never answers the
 *   connect (`connectTimeoutMs`), or a client or target that resets mid-stream, ends that
 *   connection only. A client that goes away destroys both sockets; a target that goes away
 *   (even by reset) has what it sent delivered to the client first, then the client gets a
 *   FIN (destroyed after 5 s if it does not close). Half-close is passed through
 *   (allowHalfOpen). A socket idle for `idleTimeoutMs` (0: never) ends the connection.
 * - `close` stops listening and destroys every live connection. Idempotent.
 */
export class TcpForwarder {
  private server?: Server;
  private readonly live = new Set<Socket>();
  /** Connections accepted so far (tests and `vm show` diagnostics). */
  accepted = 0;

  constructor(
    /** Where a new connection goes, asked per connection; undefined closes the client. */
    readonly target: () => { host: string; port: number } | undefined,
    readonly opts: { connectTimeoutMs?: number; idleTimeoutMs?: number; onError?: (e: Error) => void } = {},
  ) {}

  async listen(host: string, port: number): Promise<void> {
    const server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (c) => this.accept(c));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host, port, exclusive: true }, () => {
        server.off('error', reject);
        resolve();
      });
    }).catch((e: NodeJS.ErrnoException) => {
      server.close();
      const addr = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
      if (e.code === 'EADDRINUSE') throw new BangerError(ErrorCode.InUse, `host port ${addr} is already in use`, { hint: 'pick another HOSTPORT for -p, or stop what listens there', details: { field: '-p', address: addr }, cause: e });
      throw new BangerError(ErrorCode.Network, `cannot listen on ${addr}: ${e.code ?? e.message}`, { hint: e.code === 'EADDRNOTAVAIL' ? 'HOSTIP must be an address of this host (default 127.0.0.1)' : undefined, details: { field: '-p', address: addr }, cause: e });
    });
    server.on('error', (e) => this.opts.onError?.(e));
    this.server = server;
  }

  /** The bound port (useful when listening on port 0). */
  get port(): number {
    const a = this.server?.address();
    return a && typeof a === 'object' ? a.port : 0;
  }

  private accept(client: Socket): void {
    this.accepted++;
    const to = this.target();
    if (!to) {
      client.destroy();
      return;
    }
    const upstream = connect({ host: to.host, port: to.port, allowHalfOpen: true });
    this.live.add(client);
    this.live.add(upstream);
    let done = false;
    let connected = false;
    const end = () => {
      if (done) return;
      done = true;
      clearTimeout(connectTimer);
      clearTimeout(graceTimer);
      client.destroy();
      upstream.destroy();
      this.live.delete(client);
      this.live.delete(upstream);
    };
    const connectTimer = setTimeout(end, this.opts.connectTimeoutMs ?? 10_000);
    connectTimer.unref();
    let graceTimer: NodeJS.Timeout | undefined;
    // The client going away (close or error) ends everything at once.
    client.on('error', end);
    client.on('close', end);
    // The target going away (FIN, reset, error) first flushes what it already sent to the
    // client: a server that closes with request bytes unread resets the connection right
    // after its response, and that response must still arrive. Then the client gets a FIN,
    // and is destroyed if it has not closed within the grace period.
    upstream.on('error', () => undefined);
    upstream.on('close', () => {
      if (!connected) return end();
      client.end();
      graceTimer = setTimeout(end, 5000);
      graceTimer.unref();
    });
    for (const s of [client, upstream]) s.setTimeout(this.opts.idleTimeoutMs ?? 0, end);
    upstream.once('connect', () => {
      connected = true;
      clearTimeout(connectTimer);
      client.pipe(upstream);
      upstream.pipe(client);
      client.resume();
    });
  }

  /** Stop listening and destroy every live connection. Idempotent. */
  async close(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    for (const c of this.live) c.destroy();
    this.live.clear();
    if (s) await new Promise<void>((r) => s.close(() => r()));
  }
}
