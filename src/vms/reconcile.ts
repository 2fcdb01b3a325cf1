import { readdir, rm } from 'node:fs/promises';
import { errorMessage } from '../core/errors.js';
import { tapName } from '../network/links.js';
import { killOrphan, orphanVmms } from './orphans.js';
import type { CgroupHost } from '../core/cgroup.js';
import { removeGroup } from '../core/cgroup-group.js';
import { orphanGroups } from './limits.js';
import type { Logger } from '../core/log.js';
import type { NetworkService } from '../network/service.js';
import type { DriverRegistry } from './drivers/registry.js';
import type { VmHandle } from './drivers/types.js';
import type { VmRecord, VmRepo } from './store.js';

/** What reconcile needs from the VM service (passed in, so reconcile never imports it). */
export interface ReconcileDeps {
  log: Logger;
  /** layout.vms and layout.vmDir */
  vmsDir: string;
  vmDir(name: string): string;
  repo: VmRepo;
  network: Pick<NetworkService, 'orphanTaps' | 'removeTap' | 'orphanNat' | 'disableNat' | 'orphanPolicies' | 'instance'>;
  /** Remove the egress policy of a VM id no running VM owns. */
  removePolicy(vmId: string): Promise<void>;
  drivers: Pick<DriverRegistry, 'get' | 'all'>;
  handle(vm: VmRecord): VmHandle;
  /** Remove a VM entirely (tap, NAT, lease, row, files, pinned key). */
  removeVm(name: string): Promise<void>;
  /** Record a VM as stopped and remove its runtime network. */
  markStopped(vm: VmRecord): Promise<void>;
  /** A running VM was adopted: re-establish what lives in the daemon (published ports). Failures are logged. */
  adopted?(vm: VmRecord): Promise<void>;
  /** The host's cgroup hierarchy (limits.ts): groups of this instance no running VM owns are removed. */
  cgroups?(): Promise<CgroupHost>;
}

/**
 * Daemon-start reconcile (idempotent). It touches only what this instance made (owner.ts):
 * 1. every VM row: a live VMM whose command line is this VM's → adopted (state running, pid;
 *    a create that died after starting it is completed that way; its published ports are
 *    listened on again, a port now taken by something else is logged, not fatal); otherwise, for a row whose
 *    create never finished (`create_done` 0: the daemon died mid-create), the VM is removed
 *    entirely (tap, NAT, lease, row, files, pinned key), and any other row is marked stopped
 *    with its tap/NAT/sockets removed;
 * 2. orphan taps (marked with this instance's id, or unmarked banger-named taps on this
 *    instance's own bridge, and no running VM) removed;
 * 3. orphan NAT rules (marked with this instance's id; a VM id no row owns, or not running) removed,
 *    and likewise orphan egress policies (this instance's own table); an adopted VM's policy is
 *    installed again (idempotent: the same rules, one transaction);
 * 4. VMM processes marked with this instance's id (`-name banger:<id>:<vm>`) that no
 *    adopted VM accounts for are killed;
 * 5. VM directories no row owns removed (a create that died mid-way);
 * 6. cgroups of this instance (`banger/<instance>-<vm id>`) that no running VM owns removed.
 * A paused VM (`state` paused, pause.ts) is left as it is, its published ports listened on again.
 * Builder VMs of a prepare (`spec.prepare`, prepare.ts) or of a warm snapshot (`spec.memoryFile`,
 * warm.ts) are removed in step 1, running or not.
 */
export async function reconcileVms(svc: ReconcileDeps): Promise<void> {
  const { repo } = svc;
  const log = svc.log.child({ step: 'reconcile' });
  const runningTaps = new Set<string>();
  const runningIds = new Set<string>();
  const adopted = new Map<string, number>();
  const unsure = new Set<string>(); // rows whose check failed: their processes are left alone
  for (const vm of repo.list()) {
    try {
      if (vm.spec.prepare || vm.spec.memoryFile) {
        // A builder VM of a prepare the daemon did not see through (prepare.ts): its disk is
        // of no use without the prepare that would have checked and kept it.
        await svc.removeVm(vm.name);
        log.info('removed the builder vm of an unfinished prepare', { vm: vm.name });
        continue;
      }
      const st = await svc.drivers.get(vm.vmm).adopt(svc.handle(vm), vm.pid);
      if (st.running) {
        repo.setState(vm.name, { state: 'running', pid: st.pid ?? vm.pid });
        if (!vm.createDone) repo.createDone(vm.name);
        runningTaps.add(vm.tap ?? tapName(vm.id));
        runningIds.add(vm.id);
        if (st.pid) adopted.set(vm.name, st.pid);
        log.info('adopted running vm', { vm: vm.name, pid: st.pid });
        await svc
          .adopted?.(vm)
          .catch((e) => log.warn('cannot restore the egress policy or published ports of an adopted vm', { vm: vm.name, error: errorMessage(e) }));
      } else if (vm.state === 'paused' && vm.createDone) {
        // Paused (pause.ts): its state is on disk and no VMM runs; its ports stay reserved.
        log.info('vm stays paused', { vm: vm.name });
        await svc
          .adopted?.(vm)
          .catch((e) => log.warn('cannot restore the egress policy or published ports of a paused vm', { vm: vm.name, error: errorMessage(e) }));
      } else if (!vm.createDone) {
        await svc.removeVm(vm.name);
        log.info('removed vm whose create never finished', { vm: vm.name });
      } else if (vm.state !== 'stopped' || vm.pid) {
        await svc.markStopped(vm);
        log.info('marked dead vm stopped', { vm: vm.name });
      }
    } catch (e) {
      unsure.add(vm.name);
      log.warn('reconcile of vm failed', { vm: vm.name, error: errorMessage(e) });
    }
  }
  const net = svc.network;
  try {
    for (const tap of await net.orphanTaps(runningTaps)) {
      await net.removeTap(tap);
      log.info('removed orphan tap', { tap });
    }
  } catch (e) {
    log.warn('orphan tap scan failed', { error: errorMessage(e) });
  }
  for (const id of await net.orphanNat(runningIds)) {
    await net.disableNat(id).catch((e) => log.warn('orphan NAT removal failed', { id, error: errorMessage(e) }));
    log.info('removed orphan NAT rules', { vmId: id });
  }
  try {
    for (const id of await net.orphanPolicies(runningIds)) {
      await svc.removePolicy(id);
      log.info('removed orphan egress policy', { vmId: id });
    }
  } catch (e) {
    log.warn('orphan egress policy scan failed', { error: errorMessage(e) });
  }
  for (const o of await orphanVmms(svc.drivers.all(), net.instance, adopted)) {
    if (unsure.has(o.vm)) continue;
    await killOrphan(o.pid);
    log.info('killed orphan VMM', { vm: o.vm, pid: o.pid });
  }
  if (svc.cgroups) {
    const keep = new Set([...runningIds, ...repo.list().flatMap((v) => (unsure.has(v.name) ? [v.id] : []))]);
    try {
      const host = await svc.cgroups();
      for (const g of await orphanGroups(host, net.instance, keep)) {
        if (host.version !== 0) await removeGroup(host, g);
        log.info('removed orphan cgroup', { group: g });
      }
    } catch (e) {
      log.warn('orphan cgroup removal failed', { error: errorMessage(e) });
    }
  }
  const known = new Set(repo.list().map((v) => v.name));
  for (const d of await readdir(svc.vmsDir).catch(() => [] as string[])) {
    if (!known.has(d)) {
      await rm(svc.vmDir(d), { recursive: true, force: true });
      log.info('removed orphan vm directory', { dir: d });
    }
  }
}
