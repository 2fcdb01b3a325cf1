import { hasPolicy, removePolicy } from './egress.js';
import { rm } from 'node:fs/promises';
import { tapName } from '../network/links.js';
import { removeVmGroup } from './limits.js';
import type { VmRecord } from './store.js';
import type { VmBase } from './vm-base.js';

/** Record the VM as stopped and remove its runtime network (tap, NAT) and any paused state. */
export async function markStopped(vb: VmBase, vm: VmRecord): Promise<void> {
  await teardownRuntime(vb, vm);
  await rm(vb.files(vm.name).paused, { recursive: true, force: true }); // a paused VM stopped: its saved state goes
  vb.repo.setState(vm.name, { state: 'stopped', desiredState: 'stopped', pid: null });
}

/** What lives only while a VM runs: published ports, the driver's shared-folder helpers, tap, NAT, egress policy, sockets, pid file, cgroup. */
async function teardownRuntime(vb: VmBase, vm: VmRecord): Promise<void> {
  await vb.forwards.close(vm.name);
  if (vm.spec.mounts?.length) await vb.driver(vm.vmm).folders?.stop(vb.handle(vm), vm.spec.mounts);
  await vb.net.removeTap(vm.tap ?? tapName(vm.id));
  if (vm.spec.nat) await vb.net.disableNat(vm.id);
  if (hasPolicy(vm.spec)) await removePolicy(vb, vm);
  for (const p of [vb.files(vm.name).qmp, vb.files(vm.name).agent, vb.files(vm.name).pid]) await rm(p, { force: true });
  // After the VMM and its helpers are gone: the group is empty (anything left in it is killed).
  await removeVmGroup({ cgroups: () => vb.cgroups(), instance: vb.net.instance }, vm);
}
