import { constants } from 'node:os';
import { Readable, Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { BangerError, ErrorCode } from '../core/errors.js';
import type { ExitInfo } from '../core/agent-proto.js';
import { StreamCall } from '../rpc/stream.js';
import { checkSignal } from './operation.js';

/** Options of `vm.spawn` (and the common part of `vm.exec`). */
export interface SpawnOptions {
  /** Arguments after the command (no shell: `exec('sh', { args: ['-c', line] })` for one). */
  args?: string[];
  /** Environment variables added to the guest's default environment. */
  env?: Record<string, string>;
  /** Working directory in the guest (absolute; default the user's home, / for root). */
  cwd?: string;
  /** USER, UID or UID:GID from the guest's /etc/passwd (default root). */
  user?: string;
  /** Allocate a pty in the guest (stdout and stderr arrive merged on `stdout`). */
  pty?: boolean | { rows?: number; cols?: number };
  /** Aborting kills the guest process group; `wait()` rejects with E_CANCELLED. */
  signal?: AbortSignal;
}

export interface ExecOptions extends SpawnOptions {
  /** Bytes fed to the command's stdin (then EOF). Without it the command reads EOF at once. */
  stdin?: string | Uint8Array | Readable;
  /** Kill the command after this many milliseconds: the call rejects with E_TIMEOUT. */
  timeoutMs?: number;
  /** Most bytes kept per output stream (default 64 MiB): past it the command is killed, E_TOO_LARGE. */
  maxBuffer?: number;
}

/** What a finished command returns. `exitCode` is 128+N when it died of signal N. */
export interface ExecResult {
  exitCode: number;
  /** The signal that killed it, if one did. */
  signal?: number;
  stdout: Buffer;
  stderr: Buffer;
}

/** How a spawned process ended. */
export interface ProcessExit {
  exitCode: number;
  signal?: number;
}

const DEFAULT_MAX_BUFFER = 64 << 20;

/** The contract's `vm.exec` params for a command. */
function execParams(name: string, cmd: string, o: SpawnOptions) {
  const pty = o.pty ? (typeof o.pty === 'object' ? o.pty : {}) : undefined;
  return {
    name,
    argv: [cmd, ...(o.args ?? [])],
    env: o.env ? Object.entries(o.env).map(([k, v]) => `${k}=${v}`) : undefined,
    workdir: o.cwd,
    user: o.user,
    tty: !!pty,
    rows: pty ? (pty.rows ?? 24) : undefined,
    cols: pty ? (pty.cols ?? 80) : undefined,
  };
}

function signalNumber(sig: NodeJS.Signals | number): number {
  const n = typeof sig === 'number' ? sig : constants.signals[sig];
  if (typeof n !== 'number' || n < 1 || n > 64) throw new BangerError(ErrorCode.Invalid, `unknown signal ${String(sig)}`);
  return n;
}

/**
 * A process running in a VM (`vm.spawn`): Node streams for its stdio, `wait()` for its exit.
 * Output is flow-controlled end to end: a stream nobody reads stops the guest process once
 * its buffers fill (read both stdout and stderr, or destroy the one you do not want).
 */
export class VmProcess {
  readonly stdin: Writable;
  readonly stdout: Readable;
  readonly stderr: Readable;
  private readonly exit: Promise<ProcessExit>;

  /** @internal use `vm.spawn()`. */
  constructor(
    private readonly call: StreamCall,
    outputs: { stdout: Readable; stderr: Readable },
    signal?: AbortSignal,
  ) {
    this.stdout = outputs.stdout;
    this.stderr = outputs.stderr;
    this.stdin = new Writable({
      write: (chunk: Buffer, _enc, cb) => void call.write(Buffer.from(chunk)).then(() => cb(), cb),
      final: (cb) => {
        call.eof();
        cb();
      },
    });
    this.stdin.on('error', () => {});
    const onAbort = () => call.close();
    signal?.addEventListener('abort', onAbort, { once: true });
    this.exit = call.done.then(
      (e: ExitInfo) => ({ exitCode: e.code, signal: e.signal }),
      (e: unknown) => {
        if (signal?.aborted) throw new BangerError(ErrorCode.Cancelled, 'the command was cancelled (its process group was killed)', { cause: signal.reason });
        throw e;
      },
    );
    this.exit.catch(() => {});
    void this.exit
      .finally(() => {
        signal?.removeEventListener('abort', onAbort);
        this.stdout.push(null);
        this.stderr.push(null);
      })
      .catch(() => {});
  }

  /** @internal */
  static async start(socket: string, vmName: string, cmd: string, o: SpawnOptions): Promise<VmProcess> {
    checkSignal(o.signal);
    let call: StreamCall | undefined;
    const outputs = {
      stdout: new Readable({ read: () => call?.resume() }),
      stderr: new Readable({ read: () => call?.resume() }),
    };
    call = await StreamCall.open(socket, 'vm.exec', execParams(vmName, cmd, o), {
      stdout: (d) => outputs.stdout.push(d),
      stderr: (d) => outputs.stderr.push(d),
    });
    return new VmProcess(call, outputs, o.signal);
  }

  /**
   * Resolves with the exit code when the process has ended and the output streams being read
   * (flowing: a 'data' listener or a pipe) have delivered all of it, as child_process's
   * 'close'. A stream nobody reads is not waited for.
   */
  async wait(): Promise<ProcessExit> {
    const exit = await this.exit;
    await Promise.all([this.stdout, this.stderr].map((s) => (s.readableFlowing && !s.readableEnded ? finished(s).catch(() => {}) : undefined)));
    return exit;
  }

  /** Sends a signal to the process group in the guest (default SIGTERM). */
  kill(signal: NodeJS.Signals | number = 'SIGTERM'): void {
    this.call.signal(signalNumber(signal));
  }

  /** Resizes the pty (with `pty`). */
  resize(rows: number, cols: number): void {
    this.call.resize(rows, cols);
  }

  /** Drops the stream: a process still running is killed with its group. */
  close(): void {
    this.call.close();
  }
}

/**
 * Runs `cmd` to completion and collects its output (`vm.exec`). A command the guest cannot
 * start resolves with exit code 127 (not found) or 126 (not runnable) and the reason on stderr,
 * as a shell would.
 */
export async function execCollect(socket: string, vmName: string, cmd: string, o: ExecOptions): Promise<ExecResult> {
  checkSignal(o.signal);
  const max = o.maxBuffer ?? DEFAULT_MAX_BUFFER;
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  const size = { out: 0, err: 0 };
  let failure: BangerError | undefined;
  let call: StreamCall | undefined;
  const fail = (e: BangerError) => {
    failure ??= e;
    call?.close();
  };
  const sink = (which: 'out' | 'err', list: Buffer[]) => (d: Buffer) => {
    size[which] += d.length;
    if (size[which] > max)
      return void fail(
        new BangerError(ErrorCode.TooLarge, `${cmd}: std${which} passed ${max} bytes (maxBuffer); the command was killed`, { details: { maxBuffer: max } }),
      );
    list.push(d);
  };
  try {
    call = await StreamCall.open(socket, 'vm.exec', execParams(vmName, cmd, o), { stdout: sink('out', out), stderr: sink('err', err) });
  } catch (e) {
    const code = e instanceof BangerError ? e.details?.exitCode : undefined;
    if (typeof code === 'number') return { exitCode: code, stdout: Buffer.alloc(0), stderr: Buffer.from(`${(e as Error).message}\n`) };
    throw e;
  }
  const c = call;
  const onAbort = () => fail(new BangerError(ErrorCode.Cancelled, `${cmd}: cancelled (its process group was killed)`, { cause: o.signal?.reason }));
  o.signal?.addEventListener('abort', onAbort, { once: true });
  if (o.signal?.aborted) onAbort();
  const timer =
    o.timeoutMs !== undefined
      ? setTimeout(
          () => fail(new BangerError(ErrorCode.Timeout, `${cmd}: still running after ${o.timeoutMs} ms; killed`, { details: { timeoutMs: o.timeoutMs } })),
          o.timeoutMs,
        )
      : undefined;
  try {
    const feeding = feed(c, o.stdin).catch(() => {});
    const exit = await c.done.catch((e: unknown) => {
      if (failure) throw failure;
      throw e;
    });
    await feeding;
    if (failure) throw failure;
    return { exitCode: exit.code, signal: exit.signal, stdout: Buffer.concat(out), stderr: Buffer.concat(err) };
  } finally {
    if (timer) clearTimeout(timer);
    o.signal?.removeEventListener('abort', onAbort);
  }
}

async function feed(call: StreamCall, stdin: ExecOptions['stdin']): Promise<void> {
  if (stdin === undefined) return call.eof();
  if (typeof stdin === 'string' || stdin instanceof Uint8Array) {
    const b = typeof stdin === 'string' ? Buffer.from(stdin, 'utf8') : Buffer.from(stdin.buffer, stdin.byteOffset, stdin.byteLength);
    if (b.length) await call.write(b);
    return call.eof();
  }
  for await (const chunk of stdin) await call.write(typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : Buffer.from(chunk as Uint8Array));
  call.eof();
}
