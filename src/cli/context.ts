import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BangerError, ErrorCode } from '../core/errors.js';
import { installRoot } from '../core/installroot.js';
import { layoutFromEnv } from '../core/paths.js';
import { RpcClient } from '../rpc/client.js';
import type { MethodName, Params, Result } from '../rpc/contract.js';
import { inspectSocketPath } from '../rpc/socketpath.js';
import type { ProgressEvent } from '../core/operation.js';
import { ProgressRenderer } from './progress.js';

/**
 * What every command handler gets: how to reach the daemon and how to print.
 * Handlers return data; `emit` prints it (JSON or a human rendering).
 */
export interface GlobalOptions {
  json?: boolean;
  debug?: boolean;
}

export class Cli {
  private client?: RpcClient;
  constructor(readonly opts: GlobalOptions, readonly env: NodeJS.ProcessEnv = process.env) {}

  get json(): boolean {
    return !!this.opts.json;
  }

  /** Connect to bangerd; start it when none answers and we are root. */
  async connect(autostart = true): Promise<RpcClient> {
    if (this.client) return this.client;
    const { socket } = layoutFromEnv(this.env);
    try {
      this.client = await RpcClient.connect(socket);
    } catch (e) {
      if (!(e instanceof BangerError) || e.code !== ErrorCode.NoDaemon || !autostart) throw e;
      if (process.getuid?.() !== 0) {
        throw new BangerError(ErrorCode.NoDaemon, `bangerd is not running (no answer on ${socket})`, {
          hint: "start it with 'sudo banger daemon start' (or 'sudo banger system install' to run it under systemd)",
        });
      }
      const started = await startDaemonProcess(this.env);
      this.client = await waitForDaemon(socket, 15000, started);
    }
    return this.client;
  }

  /** One RPC call with progress on stderr and Ctrl-C cancelling the daemon's work. */
  async call<M extends MethodName>(method: M, params: Params<M>, opts: { progress?: boolean } = {}): Promise<Result<M>> {
    const client = await this.connect();
    const ac = new AbortController();
    const renderer = opts.progress ? new ProgressRenderer(process.stderr) : undefined;
    let interrupted = 0;
    const onSigint = () => {
      interrupted++;
      if (interrupted > 1) process.exit(130);
      renderer?.note('cancelling… (Ctrl-C again to quit without waiting for cleanup)');
      ac.abort();
    };
    process.on('SIGINT', onSigint);
    try {
      return await client.request(method, params, { signal: ac.signal, onProgress: (ev: ProgressEvent) => renderer?.update(ev) });
    } finally {
      process.off('SIGINT', onSigint);
      renderer?.stop();
    }
  }

  /** Print a result: one JSON document with --json, else the human rendering. */
  emit<T>(data: T, human: (data: T) => string): void {
    if (this.json) process.stdout.write(JSON.stringify(data, null, 2) + '\n');
    else {
      const text = human(data);
      if (text) process.stdout.write(text.endsWith('\n') ? text : text + '\n');
    }
  }

  close(): void {
    this.client?.close();
  }
}

/** A bangerd this CLI started: its pid, and the exit code once it has exited (else null). */
export interface StartedDaemon {
  pid: number;
  exitCode(): number | null;
  stderrLog: string;
}

/**
 * Start bangerd in the background. Refuses when the socket path holds something that is not a
 * socket (bangerd would refuse too; this says so at once and names the path).
 */
export async function startDaemonProcess(env: NodeJS.ProcessEnv): Promise<StartedDaemon> {
  const lay = layoutFromEnv(env);
  const at = await inspectSocketPath(lay.socket);
  if (at.kind === 'other') {
    throw new BangerError(ErrorCode.Exists, `socket path ${lay.socket} is ${at.what}, not a socket: not starting bangerd over it`, { hint: 'move it away or point BANGER_SOCKET elsewhere' });
  }
  await mkdir(lay.logDir, { recursive: true, mode: 0o700 });
  const stderrLog = join(lay.logDir, 'bangerd.stderr.log');
  const out = openSync(stderrLog, 'a', 0o600);
  const child = spawn(process.execPath, [join(installRoot(import.meta.url), 'bin', 'bangerd')], { env, detached: true, stdio: ['ignore', out, out] });
  closeSync(out);
  let code: number | null = null;
  child.once('exit', (c, sig) => (code = c ?? (sig ? 128 : 1)));
  child.unref();
  return { pid: child.pid ?? -1, exitCode: () => code, stderrLog };
}

/** Wait until bangerd answers on `socket`; fails early, with its last words, if `started` exits. */
export async function waitForDaemon(socket: string, timeoutMs: number, started?: StartedDaemon): Promise<RpcClient> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      return await RpcClient.connect(socket, 1000);
    } catch (e) {
      last = e;
      const code = started?.exitCode();
      if (code !== null && code !== undefined) {
        const tail = (await readFile(started!.stderrLog, 'utf8').catch(() => '')).trim().split('\n').slice(-3).join('\n');
        throw new BangerError(ErrorCode.Daemon, `bangerd exited (code ${code}) before it answered on ${socket}${tail ? `:\n${tail}` : ''}`, { hint: `see ${started!.stderrLog}` });
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw new BangerError(ErrorCode.NoDaemon, `bangerd did not come up on ${socket} within ${timeoutMs / 1000}s`, { hint: 'see the daemon log under $BANGER_ROOT/logs/', cause: last });
}
