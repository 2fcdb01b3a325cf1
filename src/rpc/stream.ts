import { connect, type Socket } from 'node:net';
import { BangerError, ErrorCode } from '../core/errors.js';
import { F, FrameDecoder, WINDOW, encodeFrame, type ExitInfo, type Frame } from '../core/agent-proto.js';
import type { Params } from './contract.js';
import { fromRpcError } from './wire.js';

/** Stream id of the one session on an upgraded connection (see src/vms/agent-stream.ts). */
const S = 1;

/** The methods whose reply upgrades the connection to a stream (rpc/contract.ts). */
export type StreamMethod = 'vm.exec' | 'vm.cpOut' | 'vm.cpIn';

export interface StreamSinks {
  stdout(data: Buffer): boolean | void;
  stderr(data: Buffer): boolean | void;
}

/**
 * A `vm.exec` / `vm.cpOut` / `vm.cpIn` call: one JSON-RPC request on a fresh connection to
 * bangerd, whose reply switches the connection to protocol v2 frames on stream 1
 * (docs/agent.md). Output goes to `sinks`; when a sink returns false, reading pauses until
 * `resume()` (back-pressure reaches the guest process through the agent's credit). Used by the
 * CLI (`vm exec`, `vm cp`) and the SDK alike.
 *
 * `done` resolves with the exit frame; it rejects with E_AGENT on an error frame and with
 * E_DISCONNECTED when the connection ends before either. Closing (`close()`) before the exit
 * makes the daemon kill the guest process group.
 */
export class StreamCall {
  private decoder = new FrameDecoder();
  readonly done: Promise<ExitInfo>;
  /** The daemon's reply that started the stream (`resumedMs`: the VM was paused and resumed first). */
  reply: { resumedMs?: number } = {};
  private settle!: { resolve: (e: ExitInfo) => void; reject: (e: unknown) => void };
  private constructor(
    private readonly sock: Socket,
    private readonly sinks: StreamSinks,
  ) {
    this.done = new Promise((resolve, reject) => (this.settle = { resolve, reject }));
    this.done.catch(() => {});
    sock.on('close', () =>
      this.settle.reject(
        new BangerError(ErrorCode.Disconnected, 'bangerd closed the stream before the command exited', {
          hint: "see the daemon log ('banger daemon status' shows where)",
        }),
      ),
    );
  }

  /**
   * Opens the stream on `socketPath` (the daemon must be up: connect first for autostart).
   * `signal` (the user gave up: a second SIGINT/SIGTERM) abandons it at any point: before the
   * reply the connection is dropped and this rejects with E_CANCELLED; after it, `abandon()` runs.
   */
  static async open<M extends StreamMethod>(socketPath: string, method: M, params: Params<M>, sinks: StreamSinks, signal?: AbortSignal): Promise<StreamCall> {
    const cancelled = () => new BangerError(ErrorCode.Cancelled, 'cancelled');
    if (signal?.aborted) throw cancelled();
    const path = socketPath;
    const sock = await new Promise<Socket>((resolve, reject) => {
      const s = connect(path);
      s.once('connect', () => resolve(s));
      s.once('error', (e: NodeJS.ErrnoException) =>
        reject(
          new BangerError(e.code === 'EACCES' ? ErrorCode.Permission : ErrorCode.NoDaemon, `cannot connect to bangerd at ${path}: ${e.code ?? e.message}`, {
            cause: e,
          }),
        ),
      );
    });
    sock.on('error', () => {});
    const call = new StreamCall(sock, sinks);
    const onAbort = () => call.abandon();
    signal?.addEventListener('abort', onAbort, { once: true });
    if (signal?.aborted) onAbort();
    await new Promise<void>((resolve, reject) => {
      if (signal?.aborted) return reject(cancelled());
      signal?.addEventListener('abort', () => reject(cancelled()), { once: true });
      let head = Buffer.alloc(0);
      const onData = (d: Buffer) => {
        head = Buffer.concat([head, d]);
        const nl = head.indexOf(0x0a);
        if (nl < 0) {
          if (head.length > 1 << 20) {
            sock.destroy();
            reject(new BangerError(ErrorCode.Daemon, 'bangerd sent an over-long reply'));
          }
          return;
        }
        sock.off('data', onData);
        sock.off('close', onClose);
        let msg: { error?: Parameters<typeof fromRpcError>[0]; result?: { resumedMs?: unknown } };
        try {
          msg = JSON.parse(head.subarray(0, nl).toString('utf8'));
        } catch {
          sock.destroy();
          return reject(new BangerError(ErrorCode.Daemon, 'bangerd sent an unreadable reply'));
        }
        if (msg.error) {
          sock.destroy();
          return reject(fromRpcError(msg.error));
        }
        if (typeof msg.result?.resumedMs === 'number') call.reply = { resumedMs: msg.result.resumedMs };
        sock.on('data', (c: Buffer) => call.onData(c));
        call.onData(head.subarray(nl + 1));
        resolve();
      };
      const onClose = () => reject(new BangerError(ErrorCode.Disconnected, 'connection to bangerd closed'));
      sock.on('data', onData);
      sock.on('close', onClose);
      sock.write(JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }) + '\n');
    });
    return call;
  }

  private onData(d: Buffer): void {
    if (!d.length) return;
    try {
      this.decoder.push(d, (f) => this.onFrame(f));
    } catch (e) {
      this.settle.reject(new BangerError(ErrorCode.Daemon, `bad frame from bangerd: ${(e as Error).message}`));
      this.sock.destroy();
    }
  }

  private onFrame(f: Frame): void {
    if (f.type === F.Stdout || f.type === F.Stderr) {
      const ok = f.type === F.Stdout ? this.sinks.stdout(f.payload) : this.sinks.stderr(f.payload);
      if (ok === false) this.sock.pause();
    } else if (f.type === F.Exit) {
      let v: { code?: unknown; signal?: unknown };
      try {
        v = JSON.parse(f.payload.toString('utf8'));
      } catch {
        v = {};
      }
      this.settle.resolve({ code: Number(v.code), signal: typeof v.signal === 'number' ? v.signal : undefined });
      this.sock.end();
    } else if (f.type === F.Error) {
      this.settle.reject(new BangerError(ErrorCode.Agent, f.payload.toString('utf8')));
      this.sock.destroy();
    }
  }

  /**
   * Gives up on the call without waiting for bangerd: CLOSE is sent if the socket takes it,
   * and the connection no longer keeps the process alive (bangerd kills the command's process
   * group on CLOSE or when the connection goes).
   */
  abandon(): void {
    this.settle.reject(new BangerError(ErrorCode.Cancelled, 'abandoned'));
    if (this.sock.destroyed) return;
    this.sock.end(encodeFrame(F.Close, S));
    this.sock.unref();
    setTimeout(() => this.sock.destroy(), 1000).unref();
  }

  /** Reading resumes after a sink said it was full. */
  resume(): void {
    this.sock.resume();
  }
  /** Sends stdin; resolves when the socket took it (bangerd pauses us while the guest is behind). */
  write(data: Buffer): Promise<void> {
    let ok = true;
    for (let i = 0; i < data.length; i += WINDOW / 4) ok = this.sock.write(encodeFrame(F.Stdin, S, data.subarray(i, i + WINDOW / 4))) && ok;
    return ok || this.sock.destroyed
      ? Promise.resolve()
      : new Promise((r) => {
          const done = () => {
            this.sock.off('drain', done);
            this.sock.off('close', done);
            r();
          };
          this.sock.once('drain', done);
          this.sock.once('close', done);
        });
  }
  eof(): void {
    if (!this.sock.destroyed) this.sock.write(encodeFrame(F.Eof, S));
  }
  signal(signo: number): void {
    if (!this.sock.destroyed) this.sock.write(encodeFrame(F.Signal, S, Buffer.from([signo])));
  }
  resize(rows: number, cols: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt16BE(rows, 0);
    b.writeUInt16BE(cols, 2);
    if (!this.sock.destroyed) this.sock.write(encodeFrame(F.Resize, S, b));
  }
  /** Ends the stream; before the exit frame the daemon kills the guest process group. */
  close(): void {
    if (!this.sock.destroyed) this.sock.end(encodeFrame(F.Close, S));
  }
}
