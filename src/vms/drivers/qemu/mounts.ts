import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BangerError, ErrorCode, errorMessage } from '../../../core/errors.js';
import { toolEnv, which, type Exec } from '../../../core/exec.js';
import { exists } from '../../../core/fsutil.js';
import type { MountSpec } from '../../../core/shapes/vm.js';
import { cmdline, pidAlive, waitExit } from '../../proc.js';
import { qopt } from './qopt.js';

/**
 * The QEMU driver's shared folders (`vm create --mount HOSTDIR:GUESTDIR[:ro]`; the VM service
 * reaches them through `driver.folders`, vms/host-folders.ts has the VMM-neutral part), two devices:
 * - virtiofs (preferred; chosen at create when a virtiofsd is installed, e.g. Debian's
 *   /usr/lib/qemu/virtiofsd): one virtiofsd per mount on `virtiofs-TAG.sock` in the VM
 *   directory, a `vhost-user-fs-device` in QEMU, and guest memory shared with it
 *   (`memory-backend-memfd,share=on`). virtiofsd runs detached (setsid) so it outlives the
 *   daemon like QEMU does, and exits by itself when QEMU disconnects. A `:ro` mount is a
 *   read-only bind mount inside virtiofsd's own mount namespace, so the guest cannot write
 *   even as root (and the guest mounts it `ro` too). Debian's cloud kernel has virtiofs
 *   (module), not 9p.
 * - virtio-9p (`-fsdev local … -device virtio-9p-device`, `readonly=on` for `:ro`), for hosts
 *   without virtiofsd; needs a guest kernel with 9p, 9pnet and 9pnet_virtio.
 * The guest's first-boot script mounts them on every boot from the seed file `mounts`
 * (`TAG GUESTDIR ro|rw 9p|virtiofs` lines) after modprobe from the kernel's modules disk;
 * after the first boot the VM service checks they are mounted (`verifyMountsCommand`, vms/host-folders.ts).
 * Files keep their host owners and modes (the daemon is root).
 */

const VIRTIOFSD_PATHS = ['/usr/libexec/virtiofsd', '/usr/lib/qemu/virtiofsd'];

/** The virtiofsd binary on this host, if any. */
export async function findVirtiofsd(): Promise<string | undefined> {
  for (const p of VIRTIOFSD_PATHS) if (await exists(p)) return p;
  return which('virtiofsd');
}

/** The device for host folders on this host, picked at create: virtiofs when a virtiofsd is installed, else 9p. */
export async function qemuMountDevices(mounts: MountSpec[], virtiofsd: () => Promise<string | undefined> = findVirtiofsd): Promise<MountSpec[]> {
  if (!mounts.length) return mounts;
  const kind = (await virtiofsd()) ? 'virtiofs' : '9p';
  return mounts.map((m) => ({ ...m, kind }));
}

export function virtiofsSocket(vmDir: string, m: MountSpec): string {
  return join(vmDir, `virtiofs-${m.tag}.sock`);
}

/** QEMU argv for the mounts (pure; unit-tested). virtiofs also needs `memory-backend=mem` on -M (argv.ts). */
export function qemuMountArgs(mounts: MountSpec[], vmDir: string, memoryMiB: number): string[] {
  const argv: string[] = [];
  // virtiofsd (libvhost-user) refuses legacy virtio, microvm's default for virtio-mmio.
  if (mounts.some((m) => m.kind === 'virtiofs')) argv.push('-object', `memory-backend-memfd,id=mem,size=${memoryMiB}M,share=on`, '-global', 'virtio-mmio.force-legacy=false');
  for (const m of mounts) {
    if (m.kind === 'virtiofs') {
      argv.push('-chardev', `socket,id=fs_${m.tag},path=${qopt(virtiofsSocket(vmDir, m))}`);
      argv.push('-device', `vhost-user-fs-device,chardev=fs_${m.tag},tag=${m.tag}`);
    } else {
      argv.push('-fsdev', `local,id=fs_${m.tag},path=${qopt(m.hostDir)},security_model=passthrough${m.readOnly ? ',readonly=on' : ''}`);
      argv.push('-device', `virtio-9p-device,fsdev=fs_${m.tag},mount_tag=${m.tag}`);
    }
  }
  return argv;
}

/**
 * Run inside `unshare --mount --propagation private`: for `ro`, bind HOSTDIR read-only over
 * itself (visible only in this namespace), then exec virtiofsd. Arguments, not interpolation.
 */
const INNER = 'set -e; if [ "$2" = ro ]; then mount --bind -- "$1" "$1"; mount -o remount,bind,ro -- "$1"; fi; shift 2; exec "$@"';
/** Start INNER detached (own session, output to the log) and print its pid. */
const LAUNCH = 'inner=$1 log=$2; shift 2; setsid unshare --mount --propagation private sh -c "$inner" sh "$@" </dev/null >>"$log" 2>&1 & echo $!';

/**
 * Start one virtiofsd per virtiofs mount (before QEMU, which connects to their sockets).
 * Resolves once every socket exists; their pids are in `virtiofs-TAG.pid`. On failure the
 * ones started are killed. `stopVirtiofsd` is the undo (idempotent).
 */
export async function startVirtiofsd(exec: Exec, vmDir: string, mounts: MountSpec[], binary?: string): Promise<void> {
  const fs = mounts.filter((m) => m.kind === 'virtiofs');
  if (!fs.length) return;
  const bin = binary ?? (await findVirtiofsd());
  if (!bin) throw new BangerError(ErrorCode.NotFound, 'virtiofsd is not installed (this VM shares folders over virtiofs)', { hint: 'install qemu-system-common (Debian: /usr/lib/qemu/virtiofsd) or virtiofsd', details: { field: '--mount' } });
  try {
    for (const m of fs) {
      const sock = virtiofsSocket(vmDir, m);
      await rm(sock, { force: true });
      const r = await exec(['sh', '-c', LAUNCH, 'sh', INNER, join(vmDir, 'virtiofsd.log'), m.hostDir, m.readOnly ? 'ro' : 'rw', bin, `--socket-path=${sock}`, '-o', `source=${m.hostDir}`, '-o', 'cache=auto', '-o', 'xattr'], { env: toolEnv(), timeoutMs: 10_000 });
      const pid = Number(r.stdout.trim());
      await writeFile(join(vmDir, `virtiofs-${m.tag}.pid`), `${pid}\n`);
      for (let i = 0; !(await exists(sock)); i++) {
        if (i > 100 || !pidAlive(pid)) {
          const log = await readFile(join(vmDir, 'virtiofsd.log'), 'utf8').catch(() => '');
          throw new BangerError(ErrorCode.Vmm, `step mounts: virtiofsd for ${m.hostDir} did not start${log ? `: ${log.trim().split('\n').slice(-3).join(' | ')}` : ''}`, { hint: `see ${join(vmDir, 'virtiofsd.log')}`, details: { field: '--mount', path: m.hostDir } });
        }
        await new Promise((res) => setTimeout(res, 50));
      }
    }
  } catch (e) {
    await stopVirtiofsd(vmDir, mounts);
    throw e;
  }
}

/** Kill this VM's virtiofsd processes (only a pid whose command line names our socket). Idempotent. */
export async function stopVirtiofsd(vmDir: string, mounts: MountSpec[]): Promise<void> {
  for (const m of mounts.filter((x) => x.kind === 'virtiofs')) {
    const pidFile = join(vmDir, `virtiofs-${m.tag}.pid`);
    const pid = Number((await readFile(pidFile, 'utf8').catch(() => '')).trim());
    if (pid > 0 && pidAlive(pid) && (await cmdline(pid))?.some((a) => a.includes(virtiofsSocket(vmDir, m)))) {
      try {
        process.kill(pid, 'SIGTERM');
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw new BangerError(ErrorCode.Internal, `cannot stop virtiofsd ${pid}: ${errorMessage(e)}`);
      }
      if (!(await waitExit(pid, 3000))) process.kill(pid, 'SIGKILL');
    }
    await rm(pidFile, { force: true });
    await rm(virtiofsSocket(vmDir, m), { force: true });
  }
}
