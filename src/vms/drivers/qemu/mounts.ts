import { chown, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BangerError, ErrorCode, errorMessage } from '../../../core/errors.js';
import { enterArgv } from '../../../core/cgroup-group.js';
import { toolEnv, which, type Exec } from '../../../core/exec.js';
import { exists } from '../../../core/fsutil.js';
import type { MountSpec } from '../../../core/shapes/vm.js';
import { cmdline, pidAlive, waitExit } from '../../proc.js';
import { qopt } from './qopt.js';

/**
 * The QEMU driver's shared folders (`vm create --mount HOSTDIR:GUESTDIR[:ro]`; the VM service
 * reaches them through `driver.folders`, vms/host-folders.ts has the VMM-neutral part), two devices:
 * - virtiofs (preferred; chosen at create when a virtiofsd is installed, e.g. Debian's
 *   /usr/lib/qemu/virtiofsd): one virtiofsd per mount on `virtiofs-TAG/fs.sock` in the VM
 *   directory, a `vhost-user-fs-device` in QEMU, and guest memory shared with it
 *   (`memory-backend-memfd,share=on`). virtiofsd runs detached (setsid) so it outlives the
 *   daemon like QEMU does, and exits by itself when QEMU disconnects. HOSTDIR is bound
 *   `nosuid,nodev` inside virtiofsd's own mount namespace (device nodes already in it cannot be
 *   opened through the mount). A read-write mount's virtiofsd runs through banger-fsjail
 *   (src/host/fsjail) as HOSTDIR's owner in a user namespace, under a seccomp filter: guest
 *   root writes as that user, never as host root, and cannot make setuid/setgid files or
 *   device nodes (root-owned HOSTDIRs are refused for rw). A `:ro` mount is a read-only bind,
 *   so the guest cannot write even as root (and the guest mounts it `ro` too). Debian's cloud
 *   kernel has virtiofs (module), not 9p.
 * - virtio-9p (`-fsdev local,security_model=mapped-xattr … -device virtio-9p-device`,
 *   `readonly=on` for `:ro`), for hosts without virtiofsd; needs a guest kernel with 9p, 9pnet
 *   and 9pnet_virtio. The guest's owners and modes live in xattrs; on the host its files are
 *   root's, 0600/0700.
 * The guest's first-boot script mounts them on every boot from the seed file `mounts`
 * (`TAG GUESTDIR ro|rw 9p|virtiofs` lines) after modprobe from the kernel's modules disk;
 * after the first boot the VM service checks they are mounted (`verifyMountsCommand`, vms/host-folders.ts).
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
  const kind: MountSpec['kind'] = (await virtiofsd()) ? 'virtiofs' : '9p';
  const out: MountSpec[] = mounts.map((m) => ({ ...m, kind }));
  for (const m of out) if (m.kind === 'virtiofs' && !m.readOnly) await writerOf(m);
  return out;
}

/** The directory holding one mount's virtiofsd socket (and its lock file): `virtiofs-TAG/` in the VM directory. */
export function virtiofsDir(vmDir: string, m: MountSpec): string {
  return join(vmDir, `virtiofs-${m.tag}`);
}

/** The socket QEMU connects to. virtiofsd sees the same directory at /run/virtiofsd (see INNER). */
export function virtiofsSocket(vmDir: string, m: MountSpec): string {
  return join(virtiofsDir(vmDir, m), 'fs.sock');
}

/** QEMU argv for the mounts (pure; unit-tested). virtiofs also needs `memory-backend=mem` on -M (argv.ts). */
export function qemuMountArgs(mounts: MountSpec[], vmDir: string): string[] {
  const argv: string[] = [];
  // virtiofsd (libvhost-user) refuses legacy virtio, microvm's default for virtio-mmio.
  if (mounts.some((m) => m.kind === 'virtiofs')) argv.push('-global', 'virtio-mmio.force-legacy=false'); // its RAM: memory-backend-memfd (argv.ts)
  for (const m of mounts) {
    if (m.kind === 'virtiofs') {
      argv.push('-chardev', `socket,id=fs_${m.tag},path=${qopt(virtiofsSocket(vmDir, m))}`);
      argv.push('-device', `vhost-user-fs-device,chardev=fs_${m.tag},tag=${m.tag}`);
    } else {
      // mapped-xattr: QEMU (root) creates the guest's files as plain root-owned files (0600,
      // directories 0700) and keeps the owner and mode the guest asked for in `user.virtfs.*`
      // xattrs, so no setuid bit, device node or guest-chosen owner ever reaches HOSTDIR.
      argv.push('-fsdev', `local,id=fs_${m.tag},path=${qopt(m.hostDir)},security_model=mapped-xattr${m.readOnly ? ',readonly=on' : ''}`);
      argv.push('-device', `virtio-9p-device,fsdev=fs_${m.tag},mount_tag=${m.tag}`);
    }
  }
  return argv;
}

/** banger-fsjail (scripts/build-agent.sh builds it into dist/host/), relative to this compiled module (dist/src/vms/drivers/qemu/). */
export function defaultFsJail(): string {
  return fileURLToPath(new URL('../../../../host/banger-fsjail', import.meta.url));
}

/**
 * Who a guest writes as through a read-write virtiofs mount: HOSTDIR's owner, read now (at each
 * start). A folder owned by root is refused: guest root would write as host root.
 */
export async function writerOf(m: MountSpec): Promise<{ uid: number; gid: number }> {
  const st = await stat(m.hostDir).catch((e: unknown) => {
    throw new BangerError(ErrorCode.NotFound, `--mount: host folder ${m.hostDir} does not exist`, {
      hint: 'create it first, or fix the path',
      cause: e,
      details: { field: '--mount', path: m.hostDir },
    });
  });
  if (!st.isDirectory())
    throw new BangerError(ErrorCode.Invalid, `--mount: ${m.hostDir} is not a directory`, {
      hint: 'share a folder; copy single files with banger vm cp',
      details: { field: '--mount', path: m.hostDir },
    });
  if (st.uid === 0 || st.gid === 0) {
    throw new BangerError(
      ErrorCode.Invalid,
      `--mount: ${m.hostDir} is owned by root (${st.uid}:${st.gid}); a read-write mount writes as the folder's owner, which must not be root`,
      {
        hint: `share a folder owned by an unprivileged user and group (chown USER:GROUP ${m.hostDir}), or mount it read-only (${m.hostDir}:${m.guestDir}:ro)`,
        details: { field: '--mount', path: m.hostDir, uid: st.uid, gid: st.gid },
      },
    );
  }
  return { uid: st.uid, gid: st.gid };
}

/**
 * Run as root inside `unshare --mount --propagation private` (all of it is visible only in that
 * namespace): bind HOSTDIR over itself `nosuid,nodev` (and `ro` for `:ro`), bind the mount's
 * socket directory over /run/virtiofsd (where QEMU 7.2's virtiofsd also writes its lock file,
 * a path it hard-codes), then exec the rest: virtiofsd, through banger-fsjail for `rw`.
 * Arguments, not interpolation: $1 HOSTDIR, $2 ro|rw, $3 socket directory.
 */
const INNER = [
  'set -e',
  'h=$1 mode=$2 sd=$3; shift 3',
  'mount --bind -- "$h" "$h"',
  'if [ "$mode" = ro ]; then mount -o remount,bind,ro,nosuid,nodev -- "$h"; else mount -o remount,bind,nosuid,nodev -- "$h"; fi',
  'mount --bind -- "$sd" /run/virtiofsd',
  'exec "$@"',
].join('; ');
/** Start INNER detached (own session, output to the log) and print its pid. */
const LAUNCH = 'inner=$1 log=$2; shift 2; setsid unshare --mount --propagation private sh -c "$inner" sh "$@" </dev/null >>"$log" 2>&1 & echo $!';
/** The socket path virtiofsd is given: its directory is the bind of `virtiofs-TAG/`. */
const JAIL_SOCKET = '/run/virtiofsd/fs.sock';

/** "PID STARTTIME" (field 22 of /proc/PID/stat), so a reused pid is never taken for ours. */
async function startTime(pid: number): Promise<string | undefined> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  return stat?.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
}

/** The virtiofsd argv for one mount (pure; unit-tested). `rw` runs it as HOSTDIR's owner through banger-fsjail. */
export function virtiofsdArgv(m: MountSpec, binary: string, jail?: { path: string; uid: number; gid: number }): string[] {
  // modcaps: no CAP_MKNOD (device nodes) nor CAP_FSETID (a write then clears setuid/setgid bits).
  const vfs = [binary, `--socket-path=${JAIL_SOCKET}`, '-o', `source=${m.hostDir}`, '-o', 'cache=auto', '-o', 'xattr', '-o', 'modcaps=-mknod:-fsetid'];
  if (m.readOnly) return vfs;
  if (!jail) throw new BangerError(ErrorCode.Internal, `read-write mount ${m.hostDir} needs banger-fsjail`);
  // In a user namespace virtiofsd cannot raise its open-file limit past the host's hard limit.
  return [jail.path, String(jail.uid), String(jail.gid), ...vfs, '--rlimit-nofile=0'];
}

export interface VirtiofsdOptions {
  /** The virtiofsd binary (default: findVirtiofsd()). */
  binary?: string;
  /** banger-fsjail (default: defaultFsJail()). */
  fsJail?: string;
  /** The VM's cgroup.procs files: each virtiofsd runs in the VMM's group (vms/limits.ts). */
  cgroup?: string[];
}

/**
 * Start one virtiofsd per virtiofs mount (before QEMU, which connects to their sockets).
 * Resolves once every socket exists; their "PID STARTTIME" is in `virtiofs-TAG.pid`. On failure
 * the ones started are killed. `stopVirtiofsd` is the undo (idempotent).
 *
 * A read-write mount's virtiofsd runs through banger-fsjail as HOSTDIR's owner (uid and gid read
 * at each start; root-owned is refused): guest root's files land owned by that user, and no
 * setuid/setgid bit or device node can be made. A `:ro` one runs as root on a read-only bind.
 */
export async function startVirtiofsd(exec: Exec, vmDir: string, mounts: MountSpec[], opts: VirtiofsdOptions = {}): Promise<void> {
  const fs = mounts.filter((m) => m.kind === 'virtiofs');
  if (!fs.length) return;
  const bin = opts.binary ?? (await findVirtiofsd());
  if (!bin)
    throw new BangerError(ErrorCode.NotFound, 'virtiofsd is not installed (this VM shares folders over virtiofs)', {
      hint: 'install qemu-system-common (Debian: /usr/lib/qemu/virtiofsd) or virtiofsd',
      details: { field: '--mount' },
    });
  const fsJail = opts.fsJail ?? defaultFsJail();
  try {
    for (const m of fs) {
      let jail: { path: string; uid: number; gid: number } | undefined;
      if (!m.readOnly) {
        jail = { path: fsJail, ...(await writerOf(m)) };
        if (!(await exists(fsJail)))
          throw new BangerError(ErrorCode.NotFound, `banger-fsjail not found at ${fsJail} (a read-write --mount needs it)`, {
            hint: 'run `npm run build` in the banger checkout (scripts/build-agent.sh builds it with gcc)',
            details: { field: '--mount', path: fsJail },
          });
      }
      const dir = virtiofsDir(vmDir, m);
      const sock = virtiofsSocket(vmDir, m);
      await rm(dir, { recursive: true, force: true });
      await mkdir(dir, { mode: 0o700 });
      if (jail) await chown(dir, jail.uid, jail.gid);
      // the mount point for the socket directory; QEMU's own virtiofsd makes it too.
      await mkdir('/run/virtiofsd', { recursive: true, mode: 0o755 });
      const r = await exec(
        enterArgv(opts.cgroup ?? [], [
          'sh',
          '-c',
          LAUNCH,
          'sh',
          INNER,
          join(vmDir, 'virtiofsd.log'),
          m.hostDir,
          m.readOnly ? 'ro' : 'rw',
          dir,
          ...virtiofsdArgv(m, bin, jail),
        ]),
        { env: toolEnv(), timeoutMs: 10_000 },
      );
      const pid = Number(r.stdout.trim());
      await writeFile(join(vmDir, `virtiofs-${m.tag}.pid`), `${pid} ${(await startTime(pid)) ?? ''}\n`);
      for (let i = 0; !(await exists(sock)); i++) {
        if (i > 100 || !pidAlive(pid)) {
          const log = await readFile(join(vmDir, 'virtiofsd.log'), 'utf8').catch(() => '');
          throw new BangerError(
            ErrorCode.Vmm,
            `step mounts: virtiofsd for ${m.hostDir} did not start${log ? `: ${log.trim().split('\n').slice(-3).join(' | ')}` : ''}`,
            { hint: `see ${join(vmDir, 'virtiofsd.log')}`, details: { field: '--mount', path: m.hostDir } },
          );
        }
        await new Promise((res) => setTimeout(res, 50));
      }
    }
  } catch (e) {
    await stopVirtiofsd(vmDir, mounts);
    throw e;
  }
}

/** Is pid the virtiofsd recorded in a pid file ("PID STARTTIME"; an older banger wrote "PID" and a socket in the VM dir)? */
async function isOurs(pid: number, recordedStart: string | undefined, vmDir: string, m: MountSpec): Promise<boolean> {
  if (!(pid > 0 && pidAlive(pid))) return false;
  if (recordedStart) return (await startTime(pid)) === recordedStart;
  return (await cmdline(pid))?.some((a) => a.includes(join(vmDir, `virtiofs-${m.tag}.sock`))) ?? false;
}

/** Kill this VM's virtiofsd processes (only the pid and start time recorded at start). Idempotent. */
export async function stopVirtiofsd(vmDir: string, mounts: MountSpec[]): Promise<void> {
  for (const m of mounts.filter((x) => x.kind === 'virtiofs')) {
    const pidFile = join(vmDir, `virtiofs-${m.tag}.pid`);
    const [p, st] = (await readFile(pidFile, 'utf8').catch(() => '')).trim().split(/\s+/);
    const pid = Number(p);
    if (await isOurs(pid, st, vmDir, m)) {
      try {
        process.kill(pid, 'SIGTERM');
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw new BangerError(ErrorCode.Internal, `cannot stop virtiofsd ${pid}: ${errorMessage(e)}`);
      }
      if (!(await waitExit(pid, 3000))) process.kill(pid, 'SIGKILL');
    }
    await rm(pidFile, { force: true });
    await rm(virtiofsDir(vmDir, m), { recursive: true, force: true });
    await rm(join(vmDir, `virtiofs-${m.tag}.sock`), { force: true });
  }
}
