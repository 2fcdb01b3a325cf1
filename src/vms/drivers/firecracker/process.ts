import { spawn } from 'node:child_process';
import { enterArgv } from '../../../core/cgroup-group.js';
import { closeSync, openSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { BangerError, ErrorCode, errorMessage } from '../../../core/errors.js';
import { toolEnv } from '../../../core/exec.js';
import { cmdline, pidAlive, readPidFile, sleep, waitExit } from '../../proc.js';
import { FirecrackerApi } from './api.js';
import { describeExit } from './exit-codes.js';
import type { FcFiles } from './files.js';

/**
 * The Firecracker process: spawn, wait for its API, find it again after a daemon restart, stop.
 *
 * `spawnFirecracker` unlinks a stale API socket (Firecracker refuses to bind an existing path),
 * starts `firecracker --api-sock <sock> --id <id>` detached in its own session (it outlives
 * bangerd), serial console (stdout) appended to `consolePath`, stderr to `files.stderr`,
 * writes the pid file, and resolves once `GET /` answers on the socket. If the process exits
 * first, or the socket does not answer within `socketTimeoutMs`, the process is killed, the pid
 * file and socket removed, and E_VMM says why in Firecracker's words (its exit code and the
 * tail of its stderr). Never throws with the process still running. `argv` replaces the
 * arguments (the jailer's: `binary` is then the jailer, which execs Firecracker in place, so
 * the pid stays the same; with `jailerWritesPid` banger does not write the pid file).
 */
export async function spawnFirecracker(
  binary: string,
  id: string,
  files: FcFiles,
  consolePath: string,
  o: { socketTimeoutMs?: number; signal?: AbortSignal; extraArgs?: string[]; argv?: string[]; jailerWritesPid?: boolean; cgroup?: string[] } = {},
): Promise<{ pid: number; api: FirecrackerApi }> {
  await rm(files.api, { force: true });
  // 'a' is O_APPEND: the daemon rotates the console by copy and truncate in place
  // (console-log.ts), and an appending writer goes on at the new end. The jailer path runs this
  // too (the jailer is spawned with this stdout and execs Firecracker in place; banger never
  // passes --daemonize, which would point stdout at /dev/null).
  const out = openSync(consolePath, 'a');
  const err = openSync(files.stderr, 'w');
  const argv = o.argv ?? ['--api-sock', files.api, '--id', id, ...(o.extraArgs ?? [])];
  let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  let spawnError: Error | undefined;
  // In the VM's cgroup from its first instruction (the wrapper execs Firecracker in place: same pid).
  const [bin, ...args] = enterArgv(o.cgroup ?? [], [binary, ...argv]);
  const child = spawn(bin!, args, { detached: true, stdio: ['ignore', out, err], env: toolEnv() });
  closeSync(out);
  closeSync(err);
  child.on('exit', (code, signal) => (exited = { code, signal }));
  child.on('error', (e) => (spawnError = e));
  child.unref();
  const api = new FirecrackerApi(files.api);
  const fail = async (why: string, cause?: unknown): Promise<never> => {
    if (child.pid && !exited) {
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
      await waitExit(child.pid, 5000);
    }
    await rm(files.api, { force: true });
    await rm(files.pid, { force: true });
    const stderr = (await readFile(files.stderr, 'utf8').catch(() => '')).trim().split('\n').slice(-5).join('\n');
    throw new BangerError(ErrorCode.Vmm, `step vmm-start: firecracker ${why}${stderr ? `: ${stderr}` : ''}`, {
      cause,
      hint: `run '${binary} --version' to check the binary; its stderr is in ${files.stderr}`,
      details: { step: 'vmm-start', binary, exitCode: exited?.code ?? null, signal: exited?.signal ?? null },
    });
  };
  await sleep(0);
  if (spawnError || !child.pid) return fail(`could not be started: ${errorMessage(spawnError ?? 'no pid')}`, spawnError);
  // The real jailer writes <chroot>/firecracker.pid itself (create_new: one written first would make it fail).
  if (!o.jailerWritesPid) await writeFile(files.pid, `${child.pid}\n`);
  const deadline = Date.now() + (o.socketTimeoutMs ?? 10_000);
  let last: unknown;
  for (;;) {
    if (spawnError) return fail(`could not be started: ${errorMessage(spawnError)}`, spawnError);
    if (exited) return fail(describeExit(exited.code, exited.signal));
    if (o.signal?.aborted) return fail('start cancelled');
    try {
      await api.instanceInfo({ timeoutMs: 1000 });
      return { pid: child.pid, api };
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) return fail(`API socket ${files.api} did not answer within ${o.socketTimeoutMs ?? 10_000} ms (${errorMessage(last)})`, last);
    await sleep(25);
  }
}

/**
 * The live Firecracker process of a VM, or undefined: the pid file names a live process whose
 * argv carries this VM's API socket (pids get reused), and, when `probe`, `GET /` answers.
 */
export async function findFirecracker(
  files: FcFiles,
  o: { probe?: boolean; pidHint?: number | null } = {},
): Promise<{ pid: number; state?: string } | undefined> {
  const pid = (await readPidFile(files.pid)) ?? o.pidHint ?? undefined;
  if (!pid || !pidAlive(pid)) return undefined;
  const argv = await cmdline(pid);
  if (!argv || !argv.includes(files.mark ?? files.api)) return undefined;
  if (!o.probe) return { pid };
  try {
    const info = await new FirecrackerApi(files.api).instanceInfo({ timeoutMs: 2000 });
    return { pid, state: info.state };
  } catch {
    return { pid };
  }
}

/**
 * Stop: `SendCtrlAltDel` (the guest reboots with reboot=k, which ends Firecracker), wait up
 * to `timeoutMs`, then SIGKILL. Idempotent: a process already gone is success. Removes the
 * API socket, the vsock UDS and the pid file afterwards (Firecracker leaves them behind).
 */
export async function stopFirecracker(files: FcFiles, timeoutMs: number): Promise<{ forced: boolean }> {
  const found = await findFirecracker(files);
  let forced = false;
  if (found) {
    await new FirecrackerApi(files.api).sendCtrlAltDel({ timeoutMs: 2000 }).catch(() => undefined);
    if (!(await waitExit(found.pid, timeoutMs))) {
      forced = true;
      await killFirecracker(files, 'SIGKILL');
    }
  }
  await cleanupFirecracker(files);
  return { forced };
}

/** Sends `signal` to the VM's Firecracker (if it is running); SIGKILL/SIGTERM wait for the exit and clean up. */
export async function killFirecracker(files: FcFiles, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  const found = await findFirecracker(files);
  if (found) {
    try {
      process.kill(found.pid, signal);
    } catch {
      /* gone */
    }
    if (signal === 'SIGKILL' || signal === 'SIGTERM') await waitExit(found.pid, 5000);
  }
  if (!(await findFirecracker(files))) await cleanupFirecracker(files);
}

export async function cleanupFirecracker(files: FcFiles): Promise<void> {
  for (const p of [files.api, files.vsock, files.pid]) await rm(p, { force: true });
}
