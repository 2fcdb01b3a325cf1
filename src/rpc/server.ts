import { createServer, type Server, type Socket } from 'node:net';
import { chmod, chown, lstat, mkdir, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { BangerError, ErrorCode } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import { LineSplitter, LineTooLongError, RpcCode, type MethodTable } from './protocol.js';
import { Dispatcher, type Conn, type RpcId } from './dispatch.js';
import { claimSocketPath } from './socketpath.js';

/**
 * Limits that keep any one client from stopping or exhausting the daemon (documented in
 * docs/security.md). Every one of them closes only the offending connection.
 */
export interface RpcLimits {
  /** Largest request line (bytes). A longer one gets -32600 and the connection is closed. */
  maxMessageBytes: number;
  /** Connections served at once; one more gets an error line and is closed. */
  maxConnections: number;
  /** Requests running at once on one connection; more get an error reply. */
  maxInflight: number;
  /** Reply bytes queued for a client that does not read; past this it is disconnected. */
  maxQueuedReplyBytes: number;
  /** A client that leaves replies unread (socket not drained) this long is disconnected (ms). */
  stalledReplyMs: number;
  /** A half-written request line with no new byte for this long closes the connection (ms). */
  idlePartialMs: number;
}

export const DEFAULT_RPC_LIMITS: RpcLimits = {
  maxMessageBytes: 4 * 1024 * 1024,
  maxConnections: 128,
  maxInflight: 64,
  maxQueuedReplyBytes: 16 * 1024 * 1024,
  stalledReplyMs: 300_000,
  idlePartialMs: 30_000,
};

export interface RpcServerOptions {
  socketPath: string;
  methods: MethodTable;
  log: Logger;
  /** gid of the `banger` group, if it exists; the socket is chowned root:banger. */
  gid?: number;
  limits?: Partial<RpcLimits>;
}

/**
 * Serves JSON-RPC 2.0 (NDJSON) on a Unix socket with mode 0660. No message, however
 * malformed or large, and no client behaviour (not reading, half-writing, flooding) can stop
 * the daemon: see `Dispatcher` for message handling and `RpcLimits` for resource limits.
 * The socket path is claimed with `claimSocketPath` (only a provably dead socket is removed)
 * and on close only the socket this server created is unlinked.
 */
export class RpcServer {
  private server?: Server;
  private readonly sockets = new Set<Socket>();
  private readonly limits: RpcLimits;
  private readonly dispatcher: Dispatcher;
  private boundIno?: number;
  constructor(private readonly opts: RpcServerOptions) {
    this.limits = { ...DEFAULT_RPC_LIMITS, ...opts.limits };
    this.dispatcher = new Dispatcher(opts.methods, opts.log, this.limits.maxInflight);
  }

  async listen(): Promise<void> {
    const { socketPath } = this.opts;
    await mkdir(dirname(socketPath), { recursive: true, mode: 0o750 });
    await claimSocketPath(socketPath);
    const server = createServer((sock) => this.onConnection(sock));
    this.server = server;
    const oldMask = process.umask(0o117);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(socketPath, () => resolve());
      });
    } catch (e) {
      throw new BangerError(ErrorCode.Daemon, `cannot listen on ${socketPath}: ${(e as Error).message}`, { cause: e });
    } finally {
      process.umask(oldMask);
    }
    server.on('error', (e) => this.opts.log.error('rpc server error', { error: e.message }));
    this.boundIno = (await lstat(socketPath)).ino;
    await chmod(socketPath, 0o660);
    if (this.opts.gid !== undefined) {
      await chown(socketPath, 0, this.opts.gid).catch(() => {});
      await chown(dirname(socketPath), 0, this.opts.gid).catch(() => {});
    }
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    // Unlink only our own socket: another daemon may have bound the path since.
    const st = await lstat(this.opts.socketPath).catch(() => undefined);
    if (st?.isSocket() && st.ino === this.boundIno) await unlink(this.opts.socketPath).catch(() => {});
  }

  private onConnection(sock: Socket): void {
    const L = this.limits;
    sock.on('error', () => {});
    if (this.sockets.size >= L.maxConnections) {
      this.opts.log.warn('rpc connection refused: too many connections', { limit: L.maxConnections });
      sock.end(
        JSON.stringify({
          jsonrpc: '2.0',
          id: null,
          error: { code: RpcCode.App, message: `bangerd serves at most ${L.maxConnections} connections at once`, data: { code: ErrorCode.InUse } },
        }) + '\n',
      );
      setTimeout(() => sock.destroy(), 1000).unref();
      return;
    }
    this.sockets.add(sock);
    const running = new Map<RpcId, AbortController>();
    const splitter = new LineSplitter(L.maxMessageBytes);
    let stallTimer: NodeJS.Timeout | undefined;
    let partialTimer: NodeJS.Timeout | undefined;
    const drop = (reason: string, fields: Record<string, unknown> = {}) => {
      if (sock.destroyed) return;
      this.opts.log.warn('rpc connection closed by the server', { reason, ...fields });
      sock.destroy();
    };
    const send = (msg: unknown) => {
      if (sock.destroyed || !sock.writable) return;
      let line: string;
      try {
        line = JSON.stringify(msg) + '\n';
      } catch (e) {
        const id = (msg as { id?: unknown }).id;
        line =
          JSON.stringify({
            jsonrpc: '2.0',
            id: typeof id === 'string' || typeof id === 'number' ? id : null,
            error: { code: RpcCode.Internal, message: `reply could not be serialised: ${(e as Error).message}`, data: { code: ErrorCode.Internal } },
          }) + '\n';
      }
      if (sock.writableLength + line.length > L.maxQueuedReplyBytes) return drop('client does not read its replies', { queuedBytes: sock.writableLength });
      if (!sock.write(line) && !stallTimer) {
        // Backpressure: read no more requests until the client takes its replies.
        sock.pause();
        stallTimer = setTimeout(() => drop('client left its replies unread', { ms: L.stalledReplyMs }), L.stalledReplyMs);
      }
    };
    sock.on('drain', () => {
      clearTimeout(stallTimer);
      stallTimer = undefined;
      sock.resume();
    });
    let refused = false;
    const upgrade = (take: (s: Socket) => void) => {
      // Only a connection whose one request just got its reply, with nothing after it, may switch.
      if (running.size > 1 || splitter.pending > 0 || sock.destroyed) return drop('stream upgrade refused: other requests or bytes on the connection');
      refused = true;
      clearTimeout(partialTimer);
      clearTimeout(stallTimer);
      sock.removeAllListeners('data');
      sock.removeAllListeners('drain');
      sock.resume();
      take(sock);
    };
    const conn: Conn = { send, running, upgrade };
    sock.on('data', (chunk: Buffer) => {
      if (refused) return;
      try {
        splitter.push(chunk, (line) => void this.dispatcher.handle(line, conn));
      } catch (e) {
        if (!(e instanceof LineTooLongError)) {
          drop('internal error while reading', { error: (e as Error)?.message });
          return;
        }
        // Say why, then discard whatever else arrives and close.
        refused = true;
        clearTimeout(partialTimer);
        this.opts.log.warn('rpc connection closed by the server', { reason: 'message too large', limit: L.maxMessageBytes });
        send({
          jsonrpc: '2.0',
          id: null,
          error: {
            code: RpcCode.InvalidRequest,
            message: `request too large: a message may be at most ${L.maxMessageBytes} bytes`,
            data: { code: ErrorCode.Invalid },
          },
        });
        sock.end();
        setTimeout(() => sock.destroy(), 1000).unref();
        return;
      }
      clearTimeout(partialTimer);
      partialTimer = splitter.pending > 0 ? setTimeout(() => drop('half-written request left idle', { ms: L.idlePartialMs }), L.idlePartialMs) : undefined;
    });
    sock.on('close', () => {
      clearTimeout(stallTimer);
      clearTimeout(partialTimer);
      this.sockets.delete(sock);
      for (const ac of running.values()) ac.abort(new BangerError(ErrorCode.Cancelled, 'client disconnected'));
    });
  }
}
