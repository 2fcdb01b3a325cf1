import { BangerError, ErrorCode } from '../core/errors.js';
import { toolEnv, type Exec } from '../core/exec.js';
import { sshOptions, type SshPaths } from './ssh.js';

/** Largest --init-script accepted (it travels in one RPC message). */
export const MAX_INIT_SCRIPT_BYTES = 1024 * 1024;
/** Lines of output quoted in the error when the script fails. */
export const INIT_TAIL_LINES = 20;

/**
 * The guest side (POSIX sh, run by sshd as root): the script arrives on stdin, is stored
 * 0700 under /run, runs with stdin from /dev/null, and every line it prints (stdout and
 * stderr) goes to the serial console (so `vm logs` shows it) prefixed `banger-init-script: `
 * and back to the host. The exit code is kept in a file, since a pipeline's is the last
 * command's. The marker makes it run once even if the same create retried the step.
 */
export const INIT_REMOTE = [
  'set -u',
  'd=/run/banger-init; mkdir -p -m 0700 $d; f=$d/script; rc=$d/rc',
  'cat >$f && chmod 0700 $f || exit 125',
  'echo "banger-init-script: start" >/dev/console 2>/dev/null',
  '{ "$f" </dev/null 2>&1; echo $? >$rc; } | while IFS= read -r l || [ -n "$l" ]; do printf "banger-init-script: %s\\n" "$l" >/dev/console 2>/dev/null; printf "%s\\n" "$l"; done',
  'r=$(cat $rc 2>/dev/null || echo 125)',
  'echo "banger-init-script: exit $r" >/dev/console 2>/dev/null',
  'exit $r',
].join('\n');

/**
 * Run `script` once in the guest at `ip` as root over SSH (pinned host key). Resolves with its
 * output; throws E_INIT_SCRIPT with the exit code and the last lines when it fails.
 */
export async function runInitScript(exec: Exec, ssh: SshPaths, ip: string, script: Buffer, o: { timeoutMs: number; signal?: AbortSignal }): Promise<string> {
  // Keepalives: a guest that dies or hangs mid-script fails the step in ~30 s, not never.
  const r = await exec(['ssh', ...sshOptions(ssh), '-o', 'ServerAliveInterval=5', '-o', 'ServerAliveCountMax=6', `root@${ip}`, INIT_REMOTE], {
    env: toolEnv(),
    input: script,
    allowFailure: true,
    timeoutMs: o.timeoutMs,
    signal: o.signal,
  });
  if (r.exitCode === 0) return r.stdout;
  throw initScriptFailure(r.exitCode, `${r.stdout}${r.stderr}`, r.exitCode === 255 ? 'could not be run (ssh failed)' : undefined);
}

/**
 * The E_INIT_SCRIPT error (both transports): the exit code, the last INIT_TAIL_LINES lines of
 * `output`; `how` replaces "failed with exit code N" when the script could not be run at all.
 */
export function initScriptFailure(exitCode: number, output: string, how?: string): BangerError {
  const tail = output
    .split('\n')
    .filter((l) => l.length)
    .slice(-INIT_TAIL_LINES);
  return new BangerError(
    ErrorCode.InitScript,
    `step init-script: --init-script ${how ?? `failed with exit code ${exitCode}`}${tail.length ? `; last lines:\n${tail.join('\n')}` : ''}`,
    {
      hint: 'its whole output is in: banger vm logs NAME; keep the VM to inspect it with --keep-on-failure',
      details: { field: '--init-script', exitCode, tail },
    },
  );
}
