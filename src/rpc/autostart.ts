import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BangerError, ErrorCode } from '../core/errors.js';
import { installRoot } from '../core/installroot.js';
import { layoutFromEnv } from '../core/paths.js';
import { RpcClient } from './client.js';
import { inspectSocketPath } from './socketpath.js';

/**
 * Finding bangerd and starting it: the rules every client follows (the CLI, the SDK, `banger
 * mcp`). The socket is BANGER_SOCKET, else `$BANGER_ROOT/bangerd.sock` (core/paths.ts); when
 * nothing answers there and the caller is root, a daemon is started in the background and
 * waited for; otherwise the error says how to start one.
 */
export async function connectDaemon(env: NodeJS.ProcessEnv, opts: { socket?: string; autostart?: boolean } = {}): Promise<RpcClient> {
  const socket = opts.socket ?? layoutFromEnv(env).socket;
  try {
    return await RpcClient.connect(socket);
  } catch (e) {
    if (!(e instanceof BangerError) || e.code !== ErrorCode.NoDaemon || opts.autostart === false) throw e;
    if (process.getuid?.() !== 0) {
      throw new BangerError(ErrorCode.NoDaemon, `bangerd is not running (no answer on ${socket})`, {
        hint: "start it with 'sudo banger daemon start' (or 'sudo banger system install' to run it under systemd)",
      });
    }
    // The daemon finds its socket from the environment: start it with the one we were given.
    const started = await startDaemonProcess(opts.socket ? { ...env, BANGER_SOCKET: opts.socket } : env);
    return waitForDaemon(socket, 15000, started);
  }
}

/** A bangerd this client started: its pid, and the exit code once it has exited (else null). */
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
    throw new BangerError(ErrorCode.Exists, `socket path ${lay.socket} is ${at.what}, not a socket: not starting bangerd over it`, {
      hint: 'move it away or point BANGER_SOCKET elsewhere',
    });
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
        throw new BangerError(ErrorCode.Daemon, `bangerd exited (code ${code}) before it answered on ${socket}${tail ? `:\n${tail}` : ''}`, {
          hint: `see ${started!.stderrLog}`,
        });
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw new BangerError(ErrorCode.NoDaemon, `bangerd did not come up on ${socket} within ${timeoutMs / 1000}s`, {
    hint: 'see the daemon log under $BANGER_ROOT/logs/',
    cause: last,
  });
}
