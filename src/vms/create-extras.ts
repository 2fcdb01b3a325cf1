import { BangerError, ErrorCode, errorMessage, isBangerError } from '../core/errors.js';
import { toolEnv } from '../core/exec.js';
import { runInitScript } from './init-script.js';
import { runInitScriptOverAgent } from './init-script-agent.js';
import { agentConnection } from './agent.js';
import type { VmHandle, VmmDriver } from './drivers/types.js';
import { verifyMountsCommand } from './host-folders.js';
import type { MountSpec } from './publish-spec.js';
import { sshOptions } from './ssh.js';
import type { Stage } from './readiness.js';
import type { Exec } from '../core/exec.js';
import type { SshPaths } from './ssh.js';

/** What these steps need of the VM service (passed in, so this file never imports it). */
export interface ExtrasDeps {
  ctx: { exec: Exec };
  ssh: SshPaths;
  /** The VM's driver and handle, for the agent channel (the VM service has both). */
  driver?(kind: string): Pick<VmmDriver, 'openAgentStream'>;
  handle?(vm: Pick<VmRecord, 'id' | 'name'>): VmHandle;
}
import type { VmRecord } from './store.js';

/** How long an --init-script may run before create gives up on it. */
export const INIT_SCRIPT_TIMEOUT_MS = 60 * 60 * 1000;

/** How long the agent gets to answer before --init-script falls back to SSH. */
export const INIT_AGENT_WAIT_MS = 5000;

/**
 * step init-script: run `script` once as root, through the guest agent's exec when it answers
 * (protocol 2), else over SSH (an image without the agent, or with the version 1 agent); the
 * output is on the console (`vm logs`) either way, and a failure is E_INIT_SCRIPT with the exit
 * code and last lines. The stage message says which transport ran it.
 */
export async function initScriptStep(svc: ExtrasDeps, vm: VmRecord, script: Buffer, o: { stage: Stage; signal?: AbortSignal }): Promise<void> {
  const conn = svc.driver && svc.handle ? await agentConnection(svc.driver(vm.vmm), svc.handle(vm), INIT_AGENT_WAIT_MS).catch(() => undefined) : undefined;
  if (conn) {
    o.stage('init-script', `${script.length} bytes, as root, through the agent`);
    await runInitScriptOverAgent(conn, script, { timeoutMs: INIT_SCRIPT_TIMEOUT_MS, signal: o.signal });
  } else {
    if (!vm.ip) throw new BangerError(ErrorCode.Internal, `vm '${vm.name}' has no IP lease`);
    o.stage('init-script', `${script.length} bytes, as root, over ssh`);
    await runInitScript(svc.ctx.exec, svc.ssh, vm.ip, script, { timeoutMs: INIT_SCRIPT_TIMEOUT_MS, signal: o.signal });
  }
  o.stage('init-script', undefined, true);
}

/** The error a create with --keep-on-failure reports: the original code, and where the VM is. */
export function keptOnFailure(name: string, e: unknown): BangerError {
  const inner = isBangerError(e) ? e : undefined;
  return new BangerError(inner?.code ?? ErrorCode.Internal, `${errorMessage(e)}\n(vm '${name}' was kept: --keep-on-failure)`, {
    hint: `inspect it with 'banger vm ssh ${name}' and 'banger vm logs ${name}'; remove it with 'banger vm rm ${name}'`,
    details: { ...(inner?.details ?? {}), vm: name, kept: true },
    cause: e,
  });
}

/** step mounts: after the first boot, every --mount must be mounted in the guest (else the kernel lacks the filesystem). */
export async function verifyMountsStep(svc: ExtrasDeps, vm: VmRecord, mounts: MountSpec[], o: { stage: Stage; signal?: AbortSignal }): Promise<void> {
  o.stage('mounts', mounts.map((m) => `${m.guestDir} (${m.kind})`).join(', '));
  const r = await svc.ctx.exec(['ssh', ...sshOptions(svc.ssh), `root@${vm.ip}`, verifyMountsCommand(mounts)], {
    env: toolEnv(),
    allowFailure: true,
    timeoutMs: 60_000,
    signal: o.signal,
  });
  if (r.exitCode !== 0) {
    throw new BangerError(
      ErrorCode.Vmm,
      `step mounts: host folders are not mounted in the guest: ${(r.stdout + r.stderr).trim() || `ssh exit ${r.exitCode}`}`,
      {
        hint: `the guest kernel needs ${mounts[0]!.kind === 'virtiofs' ? 'virtiofs' : '9p, 9pnet and 9pnet_virtio'} (built in or on its modules disk); the first boot's messages are in: banger vm logs ${vm.name}`,
        details: { field: '--mount' },
      },
    );
  }
  o.stage('mounts', undefined, true);
}
