/**
 * cgroup facts for per-VM resource limits (issue 24): which cgroup version this host offers
 * with the controllers banger needs, read one way by the doctor and by the vms domain. Pure
 * functions over /proc/self/mounts and `cgroup.controllers` text, plus `detectCgroups` that
 * reads those files through an injected reader. The group itself (mkdir, limits, removal,
 * usage) is core/cgroup-group.ts.
 *
 * Version choice: cgroup v2 when its hierarchy (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified`
 * on a hybrid host) offers memory, pids and cpu; else cgroup v1 when each of those controllers
 * has its own (or a shared) v1 hierarchy; else none (VMs run without cgroup limits, and a limit
 * that needs one is refused with E_UNSUPPORTED).
 */

/** Controllers a VMM's limits need: memory (memory.max), pids (pids.max), cpu (cpu.max). */
export const NEEDED_CONTROLLERS = ['memory', 'pids', 'cpu'] as const;
export type Controller = (typeof NEEDED_CONTROLLERS)[number];

/** The cgroup2 mount point in `/proc/self/mounts` text (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a hybrid host), or undefined. */
export function cgroup2Mount(mounts: string): string | undefined {
  const points = mountLines(mounts)
    .filter((f) => f[2] === 'cgroup2')
    .map((f) => f[1]!);
  return points.includes('/sys/fs/cgroup') ? '/sys/fs/cgroup' : points[0];
}

/**
 * The v1 hierarchy of each controller banger uses (memory, pids, cpu, and cpuacct for CPU usage
 * when mounted), from `/proc/self/mounts` text: `cgroup` mounts whose options name the controller.
 */
export function cgroup1Mounts(mounts: string): Partial<Record<Controller | 'cpuacct', string>> {
  const out: Partial<Record<Controller | 'cpuacct', string>> = {};
  for (const f of mountLines(mounts)) {
    if (f[2] !== 'cgroup') continue;
    const opts = new Set((f[3] ?? '').split(','));
    for (const c of [...NEEDED_CONTROLLERS, 'cpuacct'] as const) if (opts.has(c) && !out[c]) out[c] = f[1]!;
  }
  return out;
}

/** Needed controllers missing from a `cgroup.controllers` line. */
export function missingControllers(controllers: string): string[] {
  const have = new Set(controllers.trim().split(/\s+/).filter(Boolean));
  return NEEDED_CONTROLLERS.filter((c) => !have.has(c));
}

/** The cgroup hierarchy banger puts VMMs in on this host. */
export type CgroupHost =
  | { version: 2; mount: string }
  | { version: 1; mounts: Record<Controller, string> & { cpuacct?: string } }
  /** No usable version: `reason` says why (for the doctor and the E_UNSUPPORTED error). */
  | { version: 0; reason: string };

/**
 * Which cgroup version to use here (see the file comment). `read` returns a file's text or
 * undefined (the doctor's HostProbe.readFile, or node:fs).
 */
export async function detectCgroups(read: (path: string) => Promise<string | undefined>): Promise<CgroupHost> {
  const mounts = (await read('/proc/self/mounts')) ?? '';
  const v2 = cgroup2Mount(mounts);
  let v2missing: string[] = [...NEEDED_CONTROLLERS];
  if (v2) {
    v2missing = missingControllers((await read(`${v2}/cgroup.controllers`)) ?? '');
    if (!v2missing.length) return { version: 2, mount: v2 };
  }
  const v1 = cgroup1Mounts(mounts);
  if (v1.memory && v1.pids && v1.cpu)
    return { version: 1, mounts: { memory: v1.memory, pids: v1.pids, cpu: v1.cpu, ...(v1.cpuacct ? { cpuacct: v1.cpuacct } : {}) } };
  const v1missing = NEEDED_CONTROLLERS.filter((c) => !v1[c]);
  return {
    version: 0,
    reason: v2
      ? `cgroup v2 at ${v2} lacks ${v2missing.join(', ')} and no cgroup v1 hierarchy has ${v1missing.join(', ')}`
      : `no cgroup2 file system mounted and no cgroup v1 hierarchy has ${v1missing.join(', ')}`,
  };
}

/** `/proc/self/mounts` lines as fields, octal escapes of spaces undone. */
function mountLines(mounts: string): string[][] {
  return mounts
    .split('\n')
    .map((l) => l.split(' ').map((x) => x.replace(/\\040/g, ' ')))
    .filter((f) => f.length >= 3 && f[1]);
}
