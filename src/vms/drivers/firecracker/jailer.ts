import { CPU_PERIOD_US, type CgroupLimits } from '../../../core/cgroup-group.js';
import { chown, copyFile, link, mkdir, rm, rmdir, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { BangerError, ErrorCode } from '../../../core/errors.js';

/**
 * Jailer mode: layout, argv, chroot preparation and removal (wired into the driver by
 * jailed.ts; docs/firecracker.md, Jailer). Firecracker's jailer creates
 * `<chrootBase>/<exec name>/<id>/root`, copies the binary in, enters the cgroup, mount
 * namespace and chroot, drops to uid/gid and execs Firecracker. Consequences handled here:
 * - every path given to the API is chroot-relative (`/vmlinux`, `/root.ext4`, …);
 * - kernel and disks are hard-linked into the chroot (copied when on another filesystem); the
 *   VM's own writable disks are chowned to the VM's uid/gid, shared read-only files (the
 *   kernel's modules disk) keep their owner and are only read;
 * - the API socket is `<chroot>/run/<vm name>/firecracker.sock` (or `/run/firecracker.socket`
 *   without a name), the pid `<chroot>/firecracker.pid`;
 * - the chroot and the cgroup are banger's to remove (`removeJail`: stop, kill, `vm rm`).
 */
export interface JailerConfig {
  /** The jailer binary. */
  binary: string;
  /** `--chroot-base-dir` (default /srv/jailer). */
  chrootBase: string;
  /** First uid/gid of the per-VM range; a VM gets base + (a 16-bit number from its id). */
  uidBase: number;
  cgroupVersion: 1 | 2;
  /** `--parent-cgroup` (default "banger"). */
  parentCgroup: string;
  /** The VM's limits, written by the jailer into its cgroup (`--cgroup FILE=VALUE`, jailerCgroupArgs). */
  limits?: CgroupLimits;
}

export interface JailPlan {
  id: string;
  uid: number;
  gid: number;
  /** `<chrootBase>/firecracker/<id>/root` on the host. */
  root: string;
  /** The jail's directory (`root`'s parent), removed by removeJail. */
  jailDir: string;
  apiSocketHost: string;
  /** The API socket as the jailed Firecracker sees it. */
  apiSocket: string;
  pidFileHost: string;
  /** The jailer argv; Firecracker's own arguments follow `--`. */
  argv: string[];
  /** The cgroup directory the jailer creates (v2), removed by removeJail. */
  cgroupDir: string;
  /** v1 with limits: the jailer's groups in the memory and pids hierarchies too, removed by removeJail. */
  extraCgroupDirs?: string[];
}

/**
 * The jailer's `--cgroup FILE=VALUE` arguments for a VM's limits (its own cgroup handling; banger
 * makes no group for a jailed VM): v2 memory.max, pids.max, cpu.max; v1 memory.limit_in_bytes,
 * pids.max, cpu.cfs_period_us + cpu.cfs_quota_us. Pure; unit-tested.
 */
export function jailerCgroupArgs(version: 1 | 2, l: CgroupLimits | undefined): string[] {
  if (!l) return [];
  const quota = l.cpuQuota === undefined ? undefined : Math.max(1000, Math.round(l.cpuQuota * CPU_PERIOD_US));
  const files =
    version === 2
      ? [`memory.max=${l.memoryBytes}`, `pids.max=${l.pids}`, ...(quota ? [`cpu.max=${quota} ${CPU_PERIOD_US}`] : [])]
      : [`memory.limit_in_bytes=${l.memoryBytes}`, `pids.max=${l.pids}`, ...(quota ? [`cpu.cfs_period_us=${CPU_PERIOD_US}`, `cpu.cfs_quota_us=${quota}`] : [])];
  return files.flatMap((f) => ['--cgroup', f]);
}

/** Firecracker ids: 1-64 characters, alphanumerics and '-'. */
const ID = /^[a-zA-Z0-9-]{1,64}$/;

/**
 * With `vmName`, the API socket is `/run/<vmName>/firecracker.sock` in the chroot, so the
 * process's argv names its VM the way an unjailed one does (`ownerOf` reads the socket's
 * directory); without, `/run/firecracker.socket`.
 */
export function jailPlan(cfg: JailerConfig, o: { firecracker: string; id: string; vmId: string; vmName?: string }): JailPlan {
  if (!ID.test(o.id)) throw new BangerError(ErrorCode.Invalid, `jailer id '${o.id}' must be 1-64 letters, digits or '-'`);
  const n = Number.parseInt(o.vmId.slice(-4), 16);
  if (!Number.isInteger(n)) throw new BangerError(ErrorCode.Invalid, `vm id '${o.vmId}' is not hex`);
  const uid = cfg.uidBase + n;
  const jailDir = join(cfg.chrootBase, basename(o.firecracker), o.id);
  const root = join(jailDir, 'root');
  if (o.vmName !== undefined && !/^[a-zA-Z0-9._-]+$/.test(o.vmName))
    throw new BangerError(ErrorCode.Invalid, `vm name '${o.vmName}' cannot name a jail socket directory`);
  const sock = o.vmName ? `/run/${o.vmName}/firecracker.sock` : '/run/firecracker.socket';
  // bangerd connects to the socket by its host path; a Unix socket path is at most 107 bytes.
  if (Buffer.byteLength(join(root, sock)) > 107) {
    throw new BangerError(ErrorCode.Invalid, `jail API socket path ${join(root, sock)} is longer than a Unix socket path may be (107 bytes)`, {
      hint: 'use a shorter firecracker.jailer.chrootBaseDir (or a shorter VM name)',
      details: { field: 'firecracker.jailer.chrootBaseDir' },
    });
  }
  return {
    id: o.id,
    uid,
    gid: uid,
    root,
    jailDir,
    apiSocketHost: join(root, sock),
    apiSocket: sock,
    pidFileHost: join(root, 'firecracker.pid'),
    cgroupDir: cfg.cgroupVersion === 2 ? join('/sys/fs/cgroup', cfg.parentCgroup, o.id) : join('/sys/fs/cgroup/cpu', cfg.parentCgroup, o.id),
    ...(cfg.limits && cfg.cgroupVersion === 1 ? { extraCgroupDirs: ['memory', 'pids'].map((c) => join('/sys/fs/cgroup', c, cfg.parentCgroup, o.id)) } : {}),
    argv: [
      cfg.binary,
      '--id',
      o.id,
      '--exec-file',
      o.firecracker,
      '--uid',
      String(uid),
      '--gid',
      String(uid),
      '--chroot-base-dir',
      cfg.chrootBase,
      '--cgroup-version',
      String(cfg.cgroupVersion),
      '--parent-cgroup',
      cfg.parentCgroup,
      ...jailerCgroupArgs(cfg.cgroupVersion, cfg.limits),
      '--',
      '--api-sock',
      sock,
    ],
  };
}

/**
 * Links `files` into the chroot under their chroot-relative names and returns those names
 * (what the API calls carry). `owned` files are chowned to the jail's uid/gid; the others keep
 * their owner (shared, read-only). Idempotent: an existing target is replaced.
 */
export async function prepareJail(plan: JailPlan, files: { name: string; hostPath: string; owned: boolean }[]): Promise<Record<string, string>> {
  await mkdir(dirname(plan.apiSocketHost), { recursive: true });
  for (let d = dirname(plan.apiSocketHost); d.startsWith(plan.root + '/'); d = dirname(d)) await chown(d, plan.uid, plan.gid);
  const out: Record<string, string> = {};
  for (const f of files) {
    if (!/^[a-zA-Z0-9._-]+$/.test(f.name)) throw new BangerError(ErrorCode.Invalid, `jail file name '${f.name}'`);
    const target = join(plan.root, f.name);
    await rm(target, { force: true });
    try {
      await link(f.hostPath, target);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EXDEV') throw e;
      await copyFile(f.hostPath, target);
    }
    if (f.owned) await chown(target, plan.uid, plan.gid);
    out[f.name] = `/${f.name}`;
  }
  return out;
}

/** Removes the jail directory and its cgroup; already gone = success. */
export async function removeJail(plan: JailPlan): Promise<void> {
  await rm(plan.jailDir, { recursive: true, force: true });
  // A cgroup is busy while the kernel still counts an exiting task (a Firecracker just killed): retry for up to ~5 s.
  for (const d of [plan.cgroupDir, ...(plan.extraCgroupDirs ?? [])]) {
    for (let i = 0; ; i++) {
      const code = await rmdir(d).then(
        () => undefined,
        (e: NodeJS.ErrnoException) => e.code,
      );
      if (code === undefined || code === 'ENOENT') break;
      if (code !== 'EBUSY' || i >= 100) throw new BangerError(ErrorCode.Vmm, `cannot remove the jail cgroup ${d}: ${code}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  await stat(plan.jailDir).then(
    () => {
      throw new BangerError(ErrorCode.Internal, `jail ${plan.jailDir} still exists after removal`);
    },
    () => undefined,
  );
}
