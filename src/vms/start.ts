import { BangerError, ErrorCode } from '../core/errors.js';
import { kvmUsable } from '../core/host.js';
import { StepRunner } from '../core/steps.js';
import { UndoStack } from '../core/undo.js';
import { launch } from './boot.js';
import type { KernelView } from './deps.js';
import type { BootPlan } from './plan.js';
import { observe, view } from './queries.js';
import type { Stage } from './readiness.js';
import type { VmRecord } from './store.js';
import type { OpContext, VmBase, VmView } from './vm-base.js';

/** `vm start`: boot stopped VMs from their rows (a running one is returned as it is). */
export async function startVms(vb: VmBase, names: string[], op: OpContext = {}, o: { wait?: boolean } = {}): Promise<VmView[]> {
  return vb.eachLocked(names, async (name) => {
    const vm = vb.get(name);
    if ((await observe(vb, vm)).running) return view(vb, vb.get(name));
    const t0 = Date.now();
    const stage: Stage = (s, message, done) => op.progress?.({ stage: s, key: names.length > 1 ? name : undefined, message, done, elapsedMs: Date.now() - t0 });
    const undo = new UndoStack((m, f) => vb.ctx.log.warn(m, { vm: name, ...f }));
    const steps = new StepRunner({ undo, signal: op.signal, stage, log: (m, f) => vb.ctx.log.debug(m, { vm: name, ...f }) });
    try {
      const plan = await planStart(vb, vm);
      await launch(vb, plan, { steps, wait: o.wait !== false });
      undo.commit();
    } catch (e) {
      await undo.unwind();
      vb.repo.setState(name, { state: 'stopped', pid: null });
      throw e;
    }
    return view(vb, vb.get(name));
  });
}

/** The plan of a start: the row's kernel and VMM, KVM probed once, the network described once. */
export async function planStart(vb: VmBase, vm: VmRecord): Promise<BootPlan> {
  if (!vm.ip) throw new BangerError(ErrorCode.Internal, `vm '${vm.name}' has no IP lease`);
  const kernel: KernelView = vb.deps.kernels.get(vm.kernel);
  const driver = vb.driver(vm.vmm);
  const probe = await driver.probe({ probe: vb.host, kvm: await kvmUsable(vb.host) });
  const handle = vb.handle(vm);
  return {
    name: vm.name,
    id: vm.id,
    kernel,
    driver,
    choice: { kind: driver.kind, kvm: probe.kvm, reason: vm.vmmReason },
    files: handle.files,
    handle,
    spec: vm.spec,
    net: vb.net.describe(vm.id, vm.ip),
  };
}
