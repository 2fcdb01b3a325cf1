/**
 * cgroup v2 facts for resource limits (issue 24; not applied yet): where the unified hierarchy
 * is mounted and which controllers it offers. Pure functions over /proc/self/mounts and
 * `cgroup.controllers` text, so the doctor (and later the vms domain) read them one way.
 */

/** Controllers a VMM's limits need: memory.max, pids.max, cpu.max. (`io` is only for disk limits.) */
export const NEEDED_CONTROLLERS = ['memory', 'pids', 'cpu'] as const;

/** The cgroup2 mount point in `/proc/self/mounts` text (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a hybrid host), or undefined. */
export function cgroup2Mount(mounts: string): string | undefined {
  const points = mounts
    .split('\n')
    .map((l) => l.split(' '))
    .filter((f) => f[2] === 'cgroup2' && f[1])
    .map((f) => f[1]!.replace(/\\040/g, ' '));
  return points.includes('/sys/fs/cgroup') ? '/sys/fs/cgroup' : points[0];
}

/** Needed controllers missing from a `cgroup.controllers` line. */
export function missingControllers(controllers: string): string[] {
  const have = new Set(controllers.trim().split(/\s+/).filter(Boolean));
  return NEEDED_CONTROLLERS.filter((c) => !have.has(c));
}
