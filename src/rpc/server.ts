import { connect, createServer, type Server, type Socket } from 'node:net';
import { chmod, chown, mkdir, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { BangerError, ErrorCode } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import { LineSplitter, RpcCode, invalidParams, toRpcError, type MethodTable, type ProgressEvent } from './protocol.js';

export interface RpcServerOptions {
  socketPath: string;
  methods: MethodTable;
  log: Logger;
  /** gid of the `banger` group, if it exists; the socket is chowned root:banger. */
  gid?: number;
}

/** Serves JSON-RPC 2.0 (NDJSON) on a Unix socket with mode 0660. */
export class RpcServer {
  private server?: Server;
  private readonly sockets = new Set<Socket>();
  constructor(private readonly opts: RpcServerOptions) {}

  async listen(): Promise<void> {
    const { socketPath } = this.opts;
    await mkdir(dirname(socketPath), { recursive: true, mode: 0o750 });
    if (await answers(socketPath)) {
      throw new BangerError(ErrorCode.Daemon, `another bangerd is already serving ${socketPath}`, { hint: "stop it first ('banger daemon stop') or use another BANGER_ROOT/BANGER_SOCKET" });
    }
    await rm(socketPath, { force: true });
    const server = createServer((sock) => this.onConnection(sock));
    this.server = server;
    const oldMask = process.umask(0o117);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(socketPath, () => resolve());
      });
    } finally {
      process.umask(oldMask);
    }
    await chmod(socketPath, 0o660);
    if (this.opts.gid !== undefined) {
      await chown(socketPath, 0, this.opts.gid).catch(() => {});
      await chown(dirname(socketPath), 0, this.opts.gid).catch(() => {});
    }
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    await rm(this.opts.socketPath, { force: true });
  }

  private onConnection(sock: Socket): void {
    this.sockets.add(sock);
    const running = new Map<string | number, AbortController>();
    const splitter = new LineSplitter();
    const send = (msg: unknown) => {
      if (!sock.destroyed && sock.writable) sock.write(JSON.stringify(msg) + '\n');
    };
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => splitter.push(chunk, (line) => void this.onMessage(line, send, running)));
    sock.on('close', () => {
      this.sockets.delete(sock);
      for (const ac of running.values()) ac.abort(new BangerError(ErrorCode.Cancelled, 'client disconnected'));
    });
    sock.on('error', () => {});
  }

  private async onMessage(line: string, send: (m: unknown) => void, running: Map<string | number, AbortController>): Promise<void> {
    let msg: { jsonrpc?: string; id?: string | number; method?: string; params?: unknown };
    try {
      msg = JSON.parse(line);
    } catch {
      return send({ jsonrpc: '2.0', id: null, error: { code: RpcCode.ParseError, message: 'parse error' } });
    }
    if (msg.method === '$/cancel') {
      const id = (msg.params as { id?: string | number } | undefined)?.id;
      if (id !== undefined) running.get(id)?.abort(new BangerError(ErrorCode.Cancelled, 'cancelled by client'));
      return;
    }
    const id = msg.id;
    if (msg.jsonrpc !== '2.0' || typeof msg.method !== 'string' || (typeof id !== 'string' && typeof id !== 'number')) {
      return send({ jsonrpc: '2.0', id: id ?? null, error: { code: RpcCode.InvalidRequest, message: 'invalid JSON-RPC 2.0 request' } });
    }
    const m = this.opts.methods[msg.method];
    if (!m) {
      return send({ jsonrpc: '2.0', id, error: { code: RpcCode.MethodNotFound, message: `unknown method '${msg.method}'`, data: { code: ErrorCode.Invalid } } });
    }
    const parsed = m.schema.safeParse(msg.params ?? {});
    if (!parsed.success) {
      const e = invalidParams(msg.method, parsed.error);
      return send({ jsonrpc: '2.0', id, error: { code: RpcCode.InvalidParams, message: e.message, data: { code: e.code, details: e.details } } });
    }
    const ac = new AbortController();
    running.set(id, ac);
    const started = Date.now();
    const log = this.opts.log.child({ method: msg.method, rpcId: id });
    log.debug('rpc start');
    try {
      const result = await m.handler(parsed.data, {
        signal: ac.signal,
        progress: (event: ProgressEvent) => send({ jsonrpc: '2.0', method: '$/progress', params: { id, event: { elapsedMs: Date.now() - started, ...event } } }),
      });
      send({ jsonrpc: '2.0', id, result: result ?? null });
      log.info('rpc ok', { ms: Date.now() - started });
    } catch (e) {
      const err = ac.signal.aborted && !(e instanceof BangerError) ? new BangerError(ErrorCode.Cancelled, 'operation cancelled', { cause: e }) : e;
      log.warn('rpc failed', { ms: Date.now() - started, error: err instanceof Error ? err.message : String(err), code: err instanceof BangerError ? err.code : undefined, stack: err instanceof BangerError ? undefined : (err as Error)?.stack });
      send({ jsonrpc: '2.0', id, error: toRpcError(err) });
    } finally {
      running.delete(id);
    }
  }
}

/** True when something accepts connections on the socket (a live daemon, not a stale file). */
function answers(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(socketPath);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}
