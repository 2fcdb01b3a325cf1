import { readdir } from 'node:fs/promises';
import type { VmmDriver } from './drivers/types.js';
import { cmdline, runningNotZombie, waitExit } from './proc.js';

/**
 * VMM processes of one instance that no VM row accounts for (a create or rm that died between
 * starting or killing the VMM and recording it). A process is this instance's when one of the
 * drivers recognises it as its own (`ownerOf`: qemu's `-name banger:<instance>:<vm name>[,…]`)
 * with this instance's id; it is an orphan when `adopted` has no entry for that VM name with
 * that pid. Other instances' processes, and anything unmarked, are never returned.
 */
export async function orphanVmms(
  drivers: Pick<VmmDriver, 'ownerOf'>[],
  instance: string,
  adopted: Map<string, number>,
): Promise<{ pid: number; vm: string }[]> {
  const out: { pid: number; vm: string }[] = [];
  for (const entry of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    const argv = await cmdline(pid);
    if (!argv) continue;
    const owner = drivers.map((d) => d.ownerOf(argv)).find((o) => o !== undefined);
    if (owner?.instance !== instance) continue;
    if (adopted.get(owner.vm) !== pid && (await runningNotZombie(pid))) out.push({ pid, vm: owner.vm });
  }
  return out;
}

/** SIGKILL a process and wait (up to 5 s) for it to go; already gone = success. */
export async function killOrphan(pid: number): Promise<void> {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    return;
  }
  await waitExit(pid, 5000);
}
