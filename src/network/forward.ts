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
 *   (allowHalfOpen). A socket idle for `idleTimeoutMs` (0: never) ends the connection: both
 *   sockets are destroyed (the client and the target each see the connection closed).
 * - At most `maxConnections` clients at once (undefined: no cap): the kernel completes the
 *   handshake, then a client past the cap is closed at once, before any target connection is
 *   made (Node's `server.maxConnections`), so one port holds at most 2 x cap descriptors.
 *   Refusals are reported per burst, not per connection: `onCap('start')` at the first
 *   refusal, `onCap('end', n)` once no refusal came for `capQuietMs` (default 10 s).
 * - `close` stops listening and destroys every live connection. Idempotent.
 */
export class TcpForwarder {
  private server?: Server;
  private readonly sockets = new Set<Socket>();
  private readonly clients = new Set<Socket>();
  /** Connections accepted so far (tests and `vm show` diagnostics). */
  accepted = 0;
  /** Connections refused at the cap so far. */
  refused = 0;
  /** Refusals in the current burst (0: no burst). */
  private burst = 0;
  private burstTimer?: NodeJS.Timeout;

  constructor(
    /** Where a new connection goes, asked per connection; undefined closes the client. */
    readonly target: () => { host: string; port: number } | undefined,
    readonly opts: {
      connectTimeoutMs?: number;
      idleTimeoutMs?: number;
      maxConnections?: number;
      /** A burst of refusals at the cap began ('start'), or ended with `refused` refusals ('end'). */
      onCap?: (event: 'start' | 'end', refused: number) => void;
      capQuietMs?: number;
      onError?: (e: Error) => void;
    } = {},
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
      if (e.code === 'EADDRINUSE')
        throw new BangerError(ErrorCode.InUse, `host port ${addr} is already in use`, {
          hint: 'pick another HOSTPORT for -p, or stop what listens there',
          details: { field: '-p', address: addr },
          cause: e,
        });
      throw new BangerError(ErrorCode.Network, `cannot listen on ${addr}: ${e.code ?? e.message}`, {
        hint: e.code === 'EADDRNOTAVAIL' ? 'HOSTIP must be an address of this host (default 127.0.0.1)' : undefined,
        details: { field: '-p', address: addr },
        cause: e,
      });
    });
    server.on('error', (e) => this.opts.onError?.(e));
    if (this.opts.maxConnections !== undefined) {
      server.maxConnections = this.opts.maxConnections;
      server.on('drop', () => this.dropped());
    }
    this.server = server;
  }

  /** The bound port (useful when listening on port 0). */
  get port(): number {
    const a = this.server?.address();
    return a && typeof a === 'object' ? a.port : 0;
  }

  /** Clients connected right now (those past the cap were never counted). */
  get live(): number {
    return this.clients.size;
  }

  /** A client refused at the cap (Node closed it at once): count it, report the burst once. */
  private dropped(): void {
    this.refused++;
    if (this.burst++ === 0) this.opts.onCap?.('start', 0);
    clearTimeout(this.burstTimer);
    this.burstTimer = setTimeout(() => this.endBurst(), this.opts.capQuietMs ?? 10_000);
    this.burstTimer.unref();
  }

  private endBurst(): void {
    clearTimeout(this.burstTimer);
    const n = this.burst;
    this.burst = 0;
    if (n) this.opts.onCap?.('end', n);
  }

  private accept(client: Socket): void {
    this.accepted++;
    const to = this.target();
    if (!to) {
      client.destroy();
      return;
    }
    const upstream = connect({ host: to.host, port: to.port, allowHalfOpen: true });
    this.sockets.add(client);
    this.sockets.add(upstream);
    this.clients.add(client);
    let done = false;
    let connected = false;
    const end = () => {
      if (done) return;
      done = true;
      clearTimeout(connectTimer);
      clearTimeout(graceTimer);
      client.destroy();
      upstream.destroy();
      this.sockets.delete(client);
      this.sockets.delete(upstream);
      this.clients.delete(client);
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
    for (const c of this.sockets) c.destroy();
    this.sockets.clear();
    this.clients.clear();
    this.endBurst();
    if (s) await new Promise<void>((r) => s.close(() => r()));
  }
}
