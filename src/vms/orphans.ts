import { readdir } from 'node:fs/promises';
import { cmdline, runningNotZombie, waitExit } from './proc.js';

/**
 * VMM processes of one instance that no VM row accounts for (a create or rm that died between
 * starting or killing QEMU and recording it). A process is this instance's when its `-name`
 * is `banger:<instance>:<vm name>[,…]` (qemuArgv); it is an orphan when `adopted` has no entry
 * for that VM name with that pid. Other instances' processes, and anything unmarked, are
 * never returned.
 */
export async function orphanVmms(instance: string, adopted: Map<string, number>): Promise<{ pid: number; vm: string }[]> {
  const prefix = `banger:${instance}:`;
  const out: { pid: number; vm: string }[] = [];
  for (const entry of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    const argv = await cmdline(pid);
    const i = argv?.indexOf('-name') ?? -1;
    const name = i >= 0 ? argv![i + 1] : undefined;
    if (!name?.startsWith(prefix)) continue;
    const vm = name.slice(prefix.length).split(',')[0]!;
    if (adopted.get(vm) !== pid && (await runningNotZombie(pid))) out.push({ pid, vm });
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
