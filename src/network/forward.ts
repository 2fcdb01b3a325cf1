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
 *   connection only (both sockets destroyed). Half-close is passed through (allowHalfOpen).
 *   A connection idle in both directions for `idleTimeoutMs` is closed.
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
    const end = () => {
      if (done) return;
      done = true;
      clearTimeout(connectTimer);
      client.destroy();
      upstream.destroy();
      this.live.delete(client);
      this.live.delete(upstream);
    };
    const connectTimer = setTimeout(end, this.opts.connectTimeoutMs ?? 10_000);
    connectTimer.unref();
    for (const s of [client, upstream]) {
      s.on('error', end);
      s.on('close', end);
      s.setTimeout(this.opts.idleTimeoutMs ?? 0, end);
    }
    // Both directions finished (FIN each way): close.
    let ended = 0;
    const oneEnded = () => (++ended === 2 ? end() : undefined);
    client.on('end', oneEnded);
    upstream.on('end', oneEnded);
    upstream.once('connect', () => {
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
