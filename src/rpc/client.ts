import { connect, type Socket } from 'node:net';
import { BangerError, ErrorCode } from '../core/errors.js';
import type { MethodName, Params, Result } from './contract.js';
import { LineSplitter, fromRpcError, type ProgressEvent } from './wire.js';

export interface CallOptions {
  onProgress?: (ev: ProgressEvent) => void;
  signal?: AbortSignal;
}

/** A JSON-RPC client over the daemon's Unix socket. One connection, many calls. */
export class RpcClient {
  private nextId = 1;
  /** Set once the connection is gone: later calls fail at once with it. */
  private closed?: BangerError;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: unknown) => void; onProgress?: (ev: ProgressEvent) => void }>();
  private constructor(
    private readonly sock: Socket,
    readonly socketPath: string,
  ) {
    const splitter = new LineSplitter();
    sock.on('data', (chunk: Buffer) =>
      splitter.push(chunk, (line) => {
        let msg: any;
        try {
          msg = JSON.parse(line);
        } catch {
          return;
        }
        if (msg.method === '$/progress') {
          this.pending.get(msg.params?.id)?.onProgress?.(msg.params.event);
          return;
        }
        const p = this.pending.get(msg.id);
        if (!p) return;
        this.pending.delete(msg.id);
        if (msg.error) p.reject(fromRpcError(msg.error));
        else p.resolve(msg.result);
      }),
    );
    const failAll = (e: BangerError) => {
      this.closed = e;
      for (const p of this.pending.values()) p.reject(e);
      this.pending.clear();
    };
    sock.on('close', () =>
      failAll(new BangerError(ErrorCode.Disconnected, 'connection to bangerd closed', { hint: "see the daemon log ('banger daemon status' shows where)" })),
    );
    sock.on('error', () => {});
  }

  static connect(socketPath: string, timeoutMs = 2000): Promise<RpcClient> {
    return new Promise((resolve, reject) => {
      const sock = connect(socketPath);
      const timer = setTimeout(() => {
        sock.destroy();
        reject(new BangerError(ErrorCode.NoDaemon, `no answer from bangerd at ${socketPath}`));
      }, timeoutMs);
      sock.once('connect', () => {
        clearTimeout(timer);
        resolve(new RpcClient(sock, socketPath));
      });
      sock.once('error', (e: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        if (e.code === 'EACCES' || e.code === 'EPERM') {
          reject(
            new BangerError(ErrorCode.Permission, `permission denied on ${socketPath}`, {
              hint: "add yourself to the 'banger' group (sudo usermod -aG banger $USER) and log in again",
              cause: e,
            }),
          );
        } else reject(new BangerError(ErrorCode.NoDaemon, `bangerd is not running (${socketPath}: ${e.code ?? e.message})`, { cause: e }));
      });
    });
  }

  /** An untyped call (any method name, e.g. to probe the server); prefer `request`. */
  call<T = unknown>(method: string, params: unknown = {}, opts: CallOptions = {}): Promise<T> {
    const id = this.nextId++;
    if (this.closed) return Promise.reject(this.closed);
    return new Promise<T>((resolve, reject) => {
      const onAbort = () => {
        this.sock.write(JSON.stringify({ jsonrpc: '2.0', method: '$/cancel', params: { id } }) + '\n');
      };
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      this.pending.set(id, {
        resolve: (v) => {
          opts.signal?.removeEventListener('abort', onAbort);
          resolve(v as T);
        },
        reject: (e) => {
          opts.signal?.removeEventListener('abort', onAbort);
          reject(e);
        },
        onProgress: opts.onProgress,
      });
      this.sock.write(JSON.stringify({ jsonrpc: '2.0', id, method, params }) + '\n');
    });
  }

  /**
   * A call checked against the contract (`rpc/contract.ts`): `params` must match the method's
   * params and the promise resolves to its result type. Rejects with the daemon's BangerError
   * (code, hint, details), or E_DISCONNECTED when the connection closes first.
   */
  request<M extends MethodName>(method: M, params: Params<M>, opts: CallOptions = {}): Promise<Result<M>> {
    return this.call<Result<M>>(method, params, opts);
  }

  /** True once the connection to bangerd is gone (closed by either side). */
  get isClosed(): boolean {
    return !!this.closed;
  }

  /** Called once when the connection is gone, whoever closed it. */
  onClose(fn: () => void): void {
    this.sock.once('close', fn);
  }

  close(): void {
    this.sock.end();
    this.sock.destroy();
  }
}
