import { rm } from 'node:fs/promises';
import { pairsOf } from './egress.js';
import { observe } from './queries.js';
import { refreshSshConfig } from './ssh-config.js';
import { unpinHostKey } from './ssh.js';
import { stopVm } from './stop.js';
import type { VmRecord } from './store.js';
import type { OpContext, VmBase } from './vm-base.js';

/** `vm rm`: remove VMs (a running one is stopped first; `force` kills it instead). */
export async function rmVms(vb: VmBase, names: string[], force = false, op: OpContext = {}): Promise<{ removed: string[] }> {
  await vb.eachLocked(names, async (name) => {
    const vm = vb.repo.find(name);
    if (!vm) return;
    op.progress?.({ stage: 'rm', key: name, message: force ? 'killing' : 'stopping' });
    await removeVm(vb, vm, force);
    op.progress?.({ stage: 'rm', key: name, done: true });
  });
  await refreshSshConfig(vb);
  return { removed: names };
}

/** Stop (or with `force` kill) and remove one VM; the caller holds its lock and refreshes ssh config. */
export async function removeVm(vb: VmBase, vm: VmRecord, force: boolean): Promise<void> {
  await stopVm(vb, vm, force || !(await observe(vb, vm)).running);
  await unpinHostKey(vb.ssh, vm.ip ?? undefined, vm.name);
  vb.deleteRow(vm.name);
  // Its address goes back to the pool: no policy may still let another VM reach it.
  await vb.net.setPolicyPairs(pairsOf(vb));
  await rm(vb.files(vm.name).dir, { recursive: true, force: true });
}

/** `vm prune`: remove every VM that is not running. */
export async function pruneVms(vb: VmBase, op: OpContext = {}): Promise<{ removed: string[] }> {
  const dead: string[] = [];
  for (const vm of vb.repo.list()) if (!(await observe(vb, vm)).running) dead.push(vm.name);
  if (dead.length) await rmVms(vb, dead, true, op);
  return { removed: dead };
}
