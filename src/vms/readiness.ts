import { BangerError, ErrorCode, errorMessage } from '../core/errors.js';
import type { Exec } from '../core/exec.js';
import { stepOf } from '../core/steps.js';
import { agentRequest } from './agent.js';
import { ConsoleScanner, tail, waitForConsole } from './console.js';
import type { VmHandle, VmmDriver } from './drivers/types.js';
import { sleep } from './proc.js';
import { waitForSsh, type SshPaths } from './ssh.js';

export type Stage = (stage: string, message?: string, done?: boolean) => void;

/**
 * Readiness after the VMM started: `boot` (the kernel hands over to userspace, seen on the
 * serial console), `ssh` (a real `ssh root@IP true` with the pinned host key succeeds) and
 * `agent` (health over the agent channel, asked beside the SSH wait and reported as soon as it
 * answers; an image without the agent is skipped, never failed). Fails fast when the VMM dies;
 * an SSH failure carries the console tail in details.
 * The console is scanned incrementally from where the last look stopped (ConsoleScanner:
 * across rotations, lines cut at MAX_LINE), so a first-boot error is found however much the
 * guest printed before it.
 */
export async function waitReady(o: {
  exec: Exec;
  ssh: SshPaths;
  ip: string;
  vm: VmHandle;
  driver: VmmDriver;
  pid: number;
  timeoutMs: number;
  /** How long SSH may take while the first boot installs systemd and an SSH server. */
  firstBootTimeoutMs: number;
  signal?: AbortSignal;
  stage: Stage;
}): Promise<void> {
  const alive = async () => (await o.driver.status(o.vm, o.pid)).running;
  const consoleLog = o.driver.consolePath(o.vm);
  const scanner = new ConsoleScanner(consoleLog);
  let sshDone = false;
  o.stage('boot', 'kernel booting');
  const boot = waitForConsole(
    scanner,
    (w) => w.init,
    async () => sshDone || !!o.signal?.aborted || !(await alive()),
  ).then((seen) => {
    if (seen) o.stage('boot', 'userspace started', true);
  });
  o.stage('ssh', `waiting for root@${o.ip}`);
  // The agent is asked from the start, beside the SSH wait: it is reported ready the moment it
  // answers (it starts early in the guest, before sshd).
  const agent = watchAgent(o, () => sshDone);
  try {
    let announced = 0;
    let hintWait = 0;
    let lastLine = '';
    let lastShown = 0;
    const watch = async (): Promise<number | undefined> => {
      const w = await scanner.poll();
      const fb = w.firstBoot();
      // The hint comes on the line after the error: give it one more round to arrive.
      if (fb.error && w.awaitingHint && !hintWait++) return undefined;
      if (fb.error) {
        // The console's own line and hint, so the user sees what the guest said.
        throw new BangerError(ErrorCode.Vmm, `step first-boot: the guest's first boot failed: banger-first-boot: error: ${fb.error}`, {
          hint: `${fb.hint ? `${fb.hint}; ` : ''}the whole console: 'banger vm logs NAME'`,
          details: { step: 'first-boot', firstBootError: fb.error, firstBootHint: fb.hint },
        });
      }
      if (!fb.installing) return undefined;
      if (!announced) {
        announced = Date.now();
        o.stage(
          'first-boot',
          `installing systemd and an SSH server with the guest's package manager (first boot only; can take minutes, up to ${Math.round(o.firstBootTimeoutMs / 60000)} min)`,
        );
      }
      // What the install is doing, from the console: at most one line every 3 s.
      const line = w.progress;
      if (line && line !== lastLine && Date.now() - lastShown >= 3000) {
        lastLine = line;
        lastShown = Date.now();
        o.stage('first-boot', line);
      }
      return o.firstBootTimeoutMs;
    };
    await waitForSsh(o.exec, o.ssh, o.ip, { timeoutMs: o.timeoutMs, signal: o.signal, alive, watch });
    if (announced) o.stage('first-boot', `installed in ${((Date.now() - announced) / 1000).toFixed(0)} s`, true);
  } catch (e) {
    sshDone = true;
    await boot;
    const be = e instanceof BangerError ? e : new BangerError(ErrorCode.Vmm, errorMessage(e), { cause: e });
    throw new BangerError(be.code, be.message, {
      hint: be.hint,
      cause: e,
      details: { ...be.details, step: stepOf(be) ?? 'ssh', consoleTail: await tail(consoleLog) },
    });
  }
  sshDone = true;
  await boot;
  o.stage('boot', 'done', true);
  o.stage('ssh', 'ready', true);

  const health = await agent;
  if (!health) o.stage('agent', 'no agent answered (skipped)', true);
}

/**
 * Ask the guest agent for `health` until it answers (reported as stage `agent` at once), or,
 * once SSH is ready (`sshDone`), one last time: an image without the agent is skipped, never
 * failed. agentRequest never throws.
 */
async function watchAgent(
  o: { driver: VmmDriver; vm: VmHandle; signal?: AbortSignal; stage: Stage },
  sshDone: () => boolean,
): Promise<Record<string, unknown> | undefined> {
  for (;;) {
    const last = sshDone();
    const h = await agentRequest(o.driver, o.vm, 'health', 3000);
    if (h) {
      o.stage('agent', `healthy${typeof h.version === 'string' ? ` (${h.version})` : ''}`, true);
      return h;
    }
    if (last || o.signal?.aborted) return undefined;
    await sleep(250);
  }
}

/** The latest install progress line of a console text (console.ts BootWatch). */
export { installProgress } from './console.js';
