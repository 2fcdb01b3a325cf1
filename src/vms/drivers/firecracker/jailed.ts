import { chown, readFile, rm, writeFile } from 'node:fs/promises';
import { basename, join, posix } from 'node:path';
import { UndoStack } from '../../../core/undo.js';
import type { LaunchSpec } from '../types.js';
import { bootFirecracker } from './boot.js';
import { fcFiles, type FcFiles } from './files.js';
import { jailPlan, prepareJail, removeJail, type JailerConfig, type JailPlan } from './jailer.js';
import type { FcBootConfig } from './requests.js';

/**
 * Jailer mode, wired: a jail lives exactly as long as its Firecracker process.
 *
 * `launchJailed` records the plan in `<vm dir>/jail.json`, prepares the chroot (kernel and
 * initrd linked in as shared files, the VM's writable disks linked in and chowned to the VM's
 * uid/gid, log and metrics files created for that uid), then spawns the JAILER with the plan's
 * argv detached in its own session; the jailer execs Firecracker in place (same pid), which
 * serves its API on `<chroot>/run/<vm name>/firecracker.sock`. Every path in the API bodies is
 * chroot-relative. Each side effect registers its undo as it happens; a failure removes the
 * chroot, its cgroup and the record before the error is thrown.
 *
 * `jailedFiles` gives the FcFiles of a jailed VM (API socket, pid file and vsock UDS inside
 * the chroot; the process is recognised by its `--id`), or the plain ones when the VM has no
 * jail record. `releaseJail` removes chroot, cgroup and record (after the process ended: stop,
 * kill, `vm rm`); the VM's disks survive, they are hard links of the files in the VM directory.
 */
export const JAIL_RECORD = 'jail.json';

export async function readJail(vmDir: string): Promise<JailPlan | undefined> {
  const text = await readFile(join(vmDir, JAIL_RECORD), 'utf8').catch(() => undefined);
  return text ? (JSON.parse(text) as JailPlan) : undefined;
}

/** FcFiles of a VM: the jail's when it has a record, else the VM directory's. */
export async function jailedFiles(vmDir: string): Promise<FcFiles> {
  const plan = await readJail(vmDir);
  return plan ? filesInJail(vmDir, plan) : fcFiles(vmDir);
}

function filesInJail(vmDir: string, plan: JailPlan): FcFiles {
  return { ...fcFiles(vmDir), api: plan.apiSocketHost, pid: plan.pidFileHost, vsock: join(plan.root, jailVsock(plan)), mark: plan.id };
}

/** The vsock UDS in the chroot: next to the API socket, in the one directory the VM's uid owns. */
function jailVsock(plan: JailPlan): string {
  return posix.join(posix.dirname(plan.apiSocket), 'vsock.sock');
}

/** Removes the VM's jail (chroot directory, cgroup) and its record; no record = nothing to do. */
export async function releaseJail(vmDir: string): Promise<void> {
  const plan = await readJail(vmDir);
  if (!plan) return;
  await removeJail(plan);
  await rm(join(vmDir, JAIL_RECORD), { force: true });
}

export interface JailedLaunch {
  jailer: JailerConfig;
  firecracker: string;
  id: string;
  spec: LaunchSpec;
  /** The boot configuration with HOST paths; rewritten here to chroot-relative ones. */
  config: FcBootConfig;
  signal?: AbortSignal;
  socketTimeoutMs?: number;
}

export async function launchJailed(o: JailedLaunch): Promise<{ pid: number }> {
  const vmDir = o.spec.files.dir;
  const plan = jailPlan(o.jailer, { firecracker: o.firecracker, id: o.id, vmId: o.spec.id, vmName: basename(vmDir) });
  const undo = new UndoStack();
  try {
    // A stale jail of this VM (a crash between launch and record removal) is replaced.
    await releaseJail(vmDir);
    undo.push('remove jail record', () => rm(join(vmDir, JAIL_RECORD), { force: true }));
    await writeFile(join(vmDir, JAIL_RECORD), `${JSON.stringify(plan)}\n`);
    undo.push('remove jail', () => removeJail(plan));
    const c = o.config;
    const links = [
      { name: 'vmlinux', hostPath: c.kernel, owned: false },
      ...(c.initrd ? [{ name: 'initrd', hostPath: c.initrd, owned: false }] : []),
      ...c.disks.map((d) => ({ name: `${d.id}.disk`, hostPath: d.path, owned: !d.readOnly })),
    ];
    const inJail = await prepareJail(plan, links);
    for (const f of ['firecracker.log', 'firecracker.metrics']) {
      await writeFile(join(plan.root, f), '', { flag: 'a' });
      await chown(join(plan.root, f), plan.uid, plan.gid);
    }
    const config: FcBootConfig = {
      ...c,
      kernel: inJail.vmlinux!,
      initrd: c.initrd ? inJail.initrd : undefined,
      disks: c.disks.map((d) => ({ ...d, path: inJail[`${d.id}.disk`]! })),
      vsock: c.vsock ? { ...c.vsock, udsPath: jailVsock(plan) } : undefined,
      logPath: '/firecracker.log',
      metricsPath: '/firecracker.metrics',
    };
    const files = filesInJail(vmDir, plan);
    const [binary, ...argv] = plan.argv;
    const r = await bootFirecracker({
      binary: binary!,
      argv,
      id: o.id,
      files,
      consolePath: o.spec.files.console,
      config,
      signal: o.signal,
      socketTimeoutMs: o.socketTimeoutMs,
    });
    undo.commit();
    return r;
  } catch (e) {
    await undo.unwind();
    throw e;
  }
}
