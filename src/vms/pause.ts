import { rm } from 'node:fs/promises';
import { BangerError, ErrorCode, errorMessage } from '../core/errors.js';
import { StepRunner } from '../core/steps.js';
import { UndoStack } from '../core/undo.js';
import { tapName } from '../network/links.js';
import { agentRequest } from './agent.js';
import { networkUp, specOf } from './boot.js';
import type { VmSnapshots, VmmDriver } from './drivers/types.js';
import { snapshotFiles } from './files.js';
import { cgroupStep, removeVmGroup } from './limits.js';
import { observe, view } from './queries.js';
import type { Stage } from './readiness.js';
import { planStart } from './start.js';
import type { VmRecord } from './store.js';
import type { OpContext, VmBase, VmView } from './vm-base.js';

/** How long a resumed guest's agent has to answer before `vm resume` calls it a failure. */
const RESUME_AGENT_MS = 30_000;

/**
 * `vm pause`: the guest's memory and device state are saved to `files.paused` (the VM's disks
 * stay where they are), the VMM exits (its memory is freed) and the tap and NAT go; published
 * ports stay reserved (their listeners stay open). The row says `paused`; reconcile leaves such
 * a VM alone. A failed save leaves the VM running and no state behind.
 */
export async function pauseVms(vb: VmBase, names: string[], op: OpContext = {}): Promise<VmView[]> {
  return vb.eachLocked(names, async (name) => {
    const vm = vb.get(name);
    if (vm.state === 'paused') return view(vb, vm);
    if (!(await observe(vb, vm)).running) throw new BangerError(ErrorCode.InUse, `vm '${name}' is not running`, { hint: `start it: banger vm start ${name}` });
    const snaps = snapshotsOf(vb.driver(vm.vmm), name);
    const plan = await planStart(vb, vm);
    const spec = await specOf(vb, plan);
    const why = snaps.check(spec);
    if (why) throw new BangerError(ErrorCode.Invalid, `vm '${name}' cannot be paused: ${why}`, { hint: `stop it instead: banger vm stop ${name}` });
    const to = snapshotFiles(plan.files.paused);
    const t0 = Date.now();
    op.progress?.({ stage: 'pause', key: names.length > 1 ? name : undefined, message: 'saving memory and device state' });
    await rm(to.dir, { recursive: true, force: true });
    vb.busy.add(name); // the VMM exits on purpose: observe must not mark it stopped meanwhile
    try {
      // biome-ignore lint/suspicious/noThenProperty: the VmSnapshots.save option (a string, not a thenable)
      await snaps.save(plan.handle, spec, to, { then: 'exit', keepDisk: true, signal: op.signal });
      vb.repo.setState(name, { state: 'paused', pid: null });
    } catch (e) {
      await rm(to.dir, { recursive: true, force: true });
      throw e;
    } finally {
      vb.busy.delete(name);
    }
    // What only a running VMM needs; the ports stay published (reserved) while paused.
    await vb.net.removeTap(vm.tap ?? tapName(vm.id)).catch((e) => vb.ctx.log.warn('tap removal after pause failed', { vm: name, error: errorMessage(e) }));
    if (vm.spec.nat) await vb.net.disableNat(vm.id).catch((e) => vb.ctx.log.warn('NAT removal after pause failed', { vm: name, error: errorMessage(e) }));
    await removeVmGroup({ cgroups: () => vb.cgroups(), instance: vb.net.instance }, vm).catch((e) =>
      vb.ctx.log.warn('cgroup removal after pause failed', { vm: name, error: errorMessage(e) }),
    );
    op.progress?.({
      stage: 'pause',
      key: names.length > 1 ? name : undefined,
      done: true,
      message: `saved in ${Date.now() - t0} ms`,
      elapsedMs: Date.now() - t0,
    });
    return view(vb, vb.get(name));
  });
}

/** `vm resume`: each paused VM restored from its saved state (a running one is returned as it is). */
export async function resumeVms(vb: VmBase, names: string[], op: OpContext = {}): Promise<VmView[]> {
  return vb.eachLocked(names, async (name) => {
    await resumeLocked(vb, vb.get(name), op, names.length > 1 ? name : undefined);
    return view(vb, vb.get(name));
  });
}

/**
 * Resume `name` when it is paused (exec, ssh and cp of a paused VM; takes the VM's lock).
 * Resolves with the milliseconds the resume took, or undefined when it was not paused.
 */
export async function resumeIfPaused(vb: VmBase, name: string, op: OpContext = {}): Promise<number | undefined> {
  if (vb.get(name).state !== 'paused') return undefined;
  return vb.locks.run(name, async () => {
    const vm = vb.get(name);
    if (vm.state !== 'paused') return undefined;
    const t0 = Date.now();
    await resumeLocked(vb, vm, op);
    return Date.now() - t0;
  });
}

/**
 * Restore a paused VM under its lock: network → restore → agent. Undo at each step; a failure
 * leaves it paused with its state kept (no process, no tap), so a later resume can try again.
 */
async function resumeLocked(vb: VmBase, vm: VmRecord, op: OpContext, key?: string): Promise<void> {
  if (vm.state !== 'paused') {
    if ((await observe(vb, vm)).running) return;
    throw new BangerError(ErrorCode.InUse, `vm '${vm.name}' is not paused`, { hint: `start it: banger vm start ${vm.name}` });
  }
  const t0 = Date.now();
  const stage: Stage = (s, message, done) => op.progress?.({ stage: s, key, message, done, elapsedMs: Date.now() - t0 });
  const undo = new UndoStack((m, f) => vb.ctx.log.warn(m, { vm: vm.name, ...f }));
  const steps = new StepRunner({ undo, signal: op.signal, stage, log: (m, f) => vb.ctx.log.debug(m, { vm: vm.name, ...f }) });
  const driver = vb.driver(vm.vmm);
  const snaps = snapshotsOf(driver, vm.name);
  const plan = await planStart(vb, vm);
  const from = snapshotFiles(plan.files.paused);
  vb.busy.add(vm.name);
  try {
    await networkUp(vb, plan, steps, false);
    const cgroup = await cgroupStep({ cgroups: () => vb.cgroups(), instance: vb.net.instance }, plan, driver, steps);
    const spec = await specOf(vb, plan, cgroup);
    await steps.run(
      'restore',
      async () => {
        steps.undo('vmm', () => driver.kill(plan.handle, 'SIGKILL'));
        const r = await snaps.restore(spec, from, { signal: op.signal });
        vb.repo.setState(vm.name, { state: 'running', pid: r.pid });
        steps.undo('state', () => vb.repo.setState(vm.name, { state: 'paused', pid: null }));
        return r;
      },
      { message: 'restoring the saved state', done: (r) => `pid ${r.pid}` },
    );
    await steps.run(
      'agent',
      async () => {
        // Tried until the deadline: the first contact can fail while the guest notices its port reopened.
        const deadline = Date.now() + RESUME_AGENT_MS;
        while (!(await agentRequest(driver, plan.handle, 'health', 5000))) {
          if (Date.now() > deadline || op.signal?.aborted)
            throw new BangerError(ErrorCode.Timeout, `vm '${vm.name}': the guest agent did not answer within ${RESUME_AGENT_MS / 1000} s of the resume`);
          await new Promise((r) => setTimeout(r, 500));
        }
      },
      { silent: true },
    );
    undo.commit();
  } catch (e) {
    await undo.unwind();
    throw e;
  } finally {
    vb.busy.delete(vm.name);
  }
  await rm(from.dir, { recursive: true, force: true });
}

function snapshotsOf(driver: VmmDriver, name: string): VmSnapshots {
  if (!driver.features.snapshots || !driver.snapshots)
    throw new BangerError(ErrorCode.Invalid, `vm '${name}': the ${driver.kind} driver cannot save a VM's state`, { hint: 'stop it instead' });
  return driver.snapshots;
}
