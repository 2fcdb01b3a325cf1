import { randomBytes } from 'node:crypto';
import { BangerError, ErrorCode, isBangerError } from '../core/errors.js';
import type { StepRunner } from '../core/steps.js';
import { agentConnection } from './agent.js';
import type { AgentConnection } from './agent-session.js';
import { specOf } from './boot.js';
import { removeConsole } from './console-log.js';
import { applyIdentity } from './identity.js';
import { cgroupStep } from './limits.js';
import type { SnapshotFiles } from './drivers/types.js';
import { planNet, type BootPlan } from './plan.js';
import type { VmBase } from './vm-base.js';

/** How long a restored guest's agent has to take its identity. */
const IDENTITY_TIMEOUT_MS = 60_000;
/** One attempt's share of it (connect, hello, identity). */
const ATTEMPT_MS = 8000;

/**
 * Start a created VM from a saved state instead of booting it (a warm snapshot, a named
 * snapshot, a fork): ports → restore → identity. Its root disk is already a private copy of
 * `from.disk` and its network is up. Undo is registered at each side effect (the VMM is killed
 * by its pid file and control socket), so a failure leaves no process.
 */
export async function restoreLaunch(vb: VmBase, plan: BootPlan, from: SnapshotFiles, steps: StepRunner): Promise<void> {
  const { driver, handle } = plan;
  const snaps = driver.snapshots;
  if (!snaps) throw new BangerError(ErrorCode.Internal, `the ${driver.kind} driver has no snapshots`);
  vb.busy.add(plan.name);
  try {
    steps.undo('ports', () => vb.forwards.close(plan.name));
    await vb.forwards.open(plan.name, plan.spec.ports ?? [], () => vb.repo.find(plan.name)?.ip ?? undefined, plan.spec.portLimits);
    // In its cgroup with its limits from the start, as a cold boot (limits.ts).
    const cgroup = await cgroupStep({ cgroups: () => vb.cgroups(), instance: vb.net.instance }, plan, driver, steps);
    const spec = await specOf(vb, plan, cgroup);
    await steps.run(
      'restore',
      async () => {
        await removeConsole(driver.consolePath(handle));
        vb.repo.setState(plan.name, { state: 'starting', desiredState: 'running' });
        steps.undo('vmm', () => driver.kill(handle, 'SIGKILL'));
        const r = await snaps.restore(spec, from, { signal: steps.signal });
        vb.repo.setState(plan.name, { state: 'running', pid: r.pid, startedAt: new Date().toISOString() });
        return r;
      },
      { message: `from ${from.dir}`, done: (r) => `pid ${r.pid}` },
    );
    await steps.run('identity', () => giveIdentity(vb, plan), { message: 'MAC, IP, hostname, machine-id, host key, RNG seed, clock' });
  } finally {
    vb.busy.delete(plan.name);
  }
}

/**
 * The one place the restore path gives a guest its own identity (the agent's `identity` op,
 * vms/identity.ts): its MAC, IP, hostname, a new machine-id, the host key banger pinned for it,
 * a fresh RNG seed and the clock.
 */
export async function giveIdentity(vb: VmBase, plan: BootPlan): Promise<void> {
  const net = planNet(plan);
  if (!plan.hostKey) throw new BangerError(ErrorCode.Internal, `vm '${plan.name}' has no host key`);
  const subnet = vb.net.subnet();
  const id = {
    mac: net.mac.toLowerCase(),
    ip: net.ip,
    prefixLen: subnet.prefix,
    gateway: subnet.gateway,
    hostname: plan.name,
    machineId: randomBytes(16).toString('hex'),
    hostKey: { privatePem: plan.hostKey.priv, publicLine: plan.hostKey.pub.trim() },
  };
  // Tried until the deadline on a fresh connection each time: right after a restore the guest
  // learns that its port closed and opened again, and a first hello can be lost in between.
  const deadline = Date.now() + IDENTITY_TIMEOUT_MS;
  for (;;) {
    let conn: AgentConnection | undefined;
    try {
      conn = await agentConnection(plan.driver, plan.handle, ATTEMPT_MS);
      await applyIdentity(conn, id, { timeoutMs: ATTEMPT_MS });
      return;
    } catch (e) {
      conn?.close(); // the next attempt opens a new connection (the pool drops a closed one)
      if (Date.now() + 500 > deadline || isBangerError(e, ErrorCode.Invalid) || isBangerError(e, ErrorCode.Agent)) throw e;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}
