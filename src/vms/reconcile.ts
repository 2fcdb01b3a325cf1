import { readdir, rm } from 'node:fs/promises';
import { errorMessage } from '../core/errors.js';
import { tapName } from '../network/links.js';
import type { VmService } from './service.js';

/**
 * Daemon-start reconcile (idempotent):
 * 1. every VM row: a live VMM whose command line is this VM's → adopted (state running, pid);
 *    otherwise marked stopped and its tap/NAT/sockets removed;
 * 2. orphan taps (banger's `tap-<hex10>` scheme, on our bridge, no running VM) removed;
 * 3. orphan NAT rules (a VM id no row owns, or a VM not running) removed;
 * 4. VM directories no row owns removed (a create that died mid-way).
 */
export async function reconcileVms(svc: VmService): Promise<void> {
  const { ctx, repo } = svc;
  const log = ctx.log.child({ step: 'reconcile' });
  const runningTaps = new Set<string>();
  const runningIds = new Set<string>();
  for (const vm of repo.list()) {
    try {
      const st = await svc.driver(vm.vmm).status(svc.files(vm.name), vm.pid);
      if (st.running) {
        repo.setState(vm.name, { state: 'running', pid: st.pid ?? vm.pid });
        runningTaps.add(vm.tap ?? tapName(vm.id));
        runningIds.add(vm.id);
        log.info('adopted running vm', { vm: vm.name, pid: st.pid });
      } else if (vm.state !== 'stopped' || vm.pid) {
        await svc.markStopped(vm);
        log.info('marked dead vm stopped', { vm: vm.name });
      }
    } catch (e) {
      log.warn('reconcile of vm failed', { vm: vm.name, error: errorMessage(e) });
    }
  }
  const net = svc.deps.network;
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
  const known = new Set(repo.list().map((v) => v.name));
  for (const d of await readdir(ctx.layout.vms).catch(() => [] as string[])) {
    if (!known.has(d)) {
      await rm(ctx.layout.vmDir(d), { recursive: true, force: true });
      log.info('removed orphan vm directory', { dir: d });
    }
  }
}
