import { mkdir, readdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { CgroupHost, Controller } from './cgroup.js';
import { BangerError, ErrorCode, errorMessage } from './errors.js';
import type { VmCgroupUsage } from './shapes/vm.js';

/**
 * One VMM's cgroup (issue 24): made before the VMM starts, limits written, the VMM (and its
 * helpers) started inside it (`enterArgv`), removed with the VM. Works on both cgroup versions:
 *
 * - v2: `<mount>/banger/<name>/` with `memory.max`, `pids.max`, `cpu.max` (the controllers are
 *   enabled in `cgroup.subtree_control` of the root and of `banger/`).
 * - v1: `<controller mount>/banger/<name>/` in each of the memory, pids and cpu hierarchies
 *   (and cpuacct, for CPU usage, when it is mounted apart), with `memory.limit_in_bytes`,
 *   `pids.max`, `cpu.cfs_quota_us` / `cpu.cfs_period_us`.
 *
 * `<name>` is `<instance id>-<vm id>` (`groupName`): two banger instances never share a group,
 * and an instance lists and removes only groups with its own prefix. All file access goes
 * through `CgroupFs` so the v2 logic is unit-tested against a plain temp directory.
 */

/** The parent group every banger instance's VMM groups live under. */
export const CGROUP_PARENT = 'banger';
/** cpu.max / cpu.cfs_period_us period, in microseconds. */
export const CPU_PERIOD_US = 100_000;

/** What a VMM's group enforces. */
export interface CgroupLimits {
  /** memory.max / memory.limit_in_bytes. */
  memoryBytes: number;
  /** pids.max (processes and threads). */
  pids: number;
  /** CPU time as a fraction of one host CPU (1.5 = one and a half CPUs); absent: no quota. */
  cpuQuota?: number;
}

/** What `vm show` reports of a group: the limits read back and current usage (the wire shape). */
export type CgroupUsage = VmCgroupUsage;

/** File access a group needs (injectable: unit tests run the v2 logic on a temp directory). */
export interface CgroupFs {
  mkdir(path: string): Promise<void>;
  write(path: string, text: string): Promise<void>;
  /** The file's text, or undefined when it does not exist. */
  read(path: string): Promise<string | undefined>;
  /** Remove an (empty) group directory; ENOENT is success. */
  rmdir(path: string): Promise<void>;
  list(path: string): Promise<string[]>;
}

export const realCgroupFs: CgroupFs = {
  mkdir: async (p) => void (await mkdir(p, { recursive: true })),
  write: (p, t) => writeFile(p, t),
  read: (p) => readFile(p, 'utf8').catch(() => undefined),
  rmdir: (p) =>
    rmdir(p).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'ENOENT') throw e;
    }),
  list: (p) =>
    readdir(p, { withFileTypes: true }).then(
      (es) => es.filter((e) => e.isDirectory()).map((e) => e.name),
      () => [],
    ),
};

/** The group of one VM of one instance. */
export function groupName(instance: string, vmId: string): string {
  return `${instance}-${vmId}`;
}

type UsableHost = Exclude<CgroupHost, { version: 0 }>;

/** The hierarchies a group spans: v2 one; v1 memory, pids, cpu (+ cpuacct when apart), each once. */
function hierarchies(host: UsableHost): Partial<Record<Controller | 'cpuacct', string>> {
  if (host.version === 2) return { memory: host.mount, pids: host.mount, cpu: host.mount };
  return host.mounts;
}

/** The group's directories, one per distinct hierarchy. */
export function groupDirs(host: UsableHost, name: string): string[] {
  return [...new Set(Object.values(hierarchies(host)))].map((m) => join(m!, CGROUP_PARENT, name));
}

/** The `cgroup.procs` files a process writes its pid to, to enter the group (every hierarchy). */
export function procsFiles(host: UsableHost, name: string): string[] {
  return groupDirs(host, name).map((d) => join(d, 'cgroup.procs'));
}

/** The limit files of a group and what goes in them, in write order (pure; unit-tested). */
export function limitFiles(host: UsableHost, name: string, l: CgroupLimits): { path: string; value: string }[] {
  const dir = (c: Controller) => join(hierarchies(host)[c]!, CGROUP_PARENT, name);
  const quota = l.cpuQuota === undefined ? undefined : Math.max(1000, Math.round(l.cpuQuota * CPU_PERIOD_US));
  if (host.version === 2) {
    return [
      { path: join(dir('memory'), 'memory.max'), value: String(l.memoryBytes) },
      { path: join(dir('pids'), 'pids.max'), value: String(l.pids) },
      { path: join(dir('cpu'), 'cpu.max'), value: `${quota ?? 'max'} ${CPU_PERIOD_US}` },
    ];
  }
  return [
    { path: join(dir('memory'), 'memory.limit_in_bytes'), value: String(l.memoryBytes) },
    { path: join(dir('pids'), 'pids.max'), value: String(l.pids) },
    { path: join(dir('cpu'), 'cpu.cfs_period_us'), value: String(CPU_PERIOD_US) },
    { path: join(dir('cpu'), 'cpu.cfs_quota_us'), value: String(quota ?? -1) },
  ];
}

/**
 * Make the group and write its limits. v2: the memory, pids and cpu controllers are enabled for
 * the children of the root and of `banger/` first. Throws E_VMM naming the file on failure; the
 * caller registers `removeGroup` as the undo before calling (it is idempotent).
 */
export async function createGroup(host: UsableHost, name: string, limits: CgroupLimits, fs: CgroupFs = realCgroupFs): Promise<void> {
  const step = async (what: string, f: () => Promise<void>) => {
    try {
      await f();
    } catch (e) {
      throw new BangerError(ErrorCode.Vmm, `step cgroup: ${what}: ${errorMessage(e)}`, {
        hint: 'see banger doctor (cgroup check)',
        cause: e,
        details: { step: 'cgroup' },
      });
    }
  };
  if (host.version === 2) {
    const enable = '+memory +pids +cpu';
    await step(`enable controllers in ${host.mount}`, () => fs.write(join(host.mount, 'cgroup.subtree_control'), enable));
    await step(`create ${join(host.mount, CGROUP_PARENT)}`, () => fs.mkdir(join(host.mount, CGROUP_PARENT)));
    await step(`enable controllers in ${join(host.mount, CGROUP_PARENT)}`, () => fs.write(join(host.mount, CGROUP_PARENT, 'cgroup.subtree_control'), enable));
  }
  for (const d of groupDirs(host, name)) await step(`create ${d}`, () => fs.mkdir(d));
  for (const f of limitFiles(host, name, limits)) await step(`write ${f.value} to ${f.path}`, () => fs.write(f.path, f.value));
}

/**
 * Remove the group: any process still inside is killed (the group is this VM's: its VMM and
 * helpers), then each directory is removed, retrying while the kernel still counts an exiting
 * task (EBUSY, up to ~5 s). Already gone = success.
 */
export async function removeGroup(host: UsableHost, name: string, fs: CgroupFs = realCgroupFs): Promise<void> {
  for (const d of groupDirs(host, name)) {
    const procs = await fs.read(join(d, 'cgroup.procs'));
    if (procs === undefined && !(await fs.list(join(d, '..'))).includes(name)) continue;
    for (const pid of (procs ?? '').split('\n').filter((p) => /^\d+$/.test(p))) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    for (let i = 0; ; i++) {
      try {
        await fs.rmdir(d);
        break;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EBUSY' || i >= 100)
          throw new BangerError(ErrorCode.Vmm, `cannot remove cgroup ${d}: ${errorMessage(e)}`, { cause: e });
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }
}

/** This instance's groups (names under `banger/` with its prefix), for reconcile's orphan sweep. */
export async function listGroups(host: UsableHost, instance: string, fs: CgroupFs = realCgroupFs): Promise<string[]> {
  const parent = join(groupDirs(host, 'x')[0]!, '..');
  return (await fs.list(parent)).filter((n) => n.startsWith(`${instance}-`));
}

/** Limits and usage of a group, or undefined when it does not exist. */
export async function groupUsage(host: UsableHost, name: string, fs: CgroupFs = realCgroupFs): Promise<CgroupUsage | undefined> {
  const h = hierarchies(host);
  const at = (c: Controller | 'cpuacct', f: string) => fs.read(join(h[c]!, CGROUP_PARENT, name, f));
  const num = (t: string | undefined) => (t === undefined || !/^\d+$/.test(t.trim()) ? undefined : Number(t.trim()));
  const keyed = (t: string | undefined, k: string) => num(new RegExp(`^${k} (\\d+)$`, 'm').exec(t ?? '')?.[1]);
  const procs = await at('pids', 'cgroup.procs');
  if (procs === undefined) return undefined;
  const pidsMax = num(await at('pids', 'pids.max')) ?? null;
  const pidsCurrent = num(await at('pids', 'pids.current')) ?? 0;
  if (host.version === 2) {
    const [max, period] = ((await at('cpu', 'cpu.max')) ?? 'max').trim().split(/\s+/);
    return {
      version: 2,
      dirs: groupDirs(host, name),
      memoryMaxBytes: num(await at('memory', 'memory.max')) ?? null,
      memoryCurrentBytes: num(await at('memory', 'memory.current')) ?? 0,
      memoryPeakBytes: num(await at('memory', 'memory.peak')),
      oomKills: keyed(await at('memory', 'memory.events'), 'oom_kill'),
      pidsMax,
      pidsCurrent,
      cpuQuota: max && max !== 'max' ? Number(max) / Number(period ?? CPU_PERIOD_US) : null,
      cpuUsageUsec: keyed(await at('cpu', 'cpu.stat'), 'usage_usec'),
    };
  }
  const memMax = num(await at('memory', 'memory.limit_in_bytes'));
  const quota = Number((await at('cpu', 'cpu.cfs_quota_us'))?.trim() ?? '-1');
  const period = num(await at('cpu', 'cpu.cfs_period_us')) ?? CPU_PERIOD_US;
  const usageNs = h.cpuacct ? num(await at('cpuacct', 'cpuacct.usage')) : undefined;
  return {
    version: 1,
    dirs: groupDirs(host, name),
    // v1 reports "no limit" as the largest page-aligned value (2^63 - 4096).
    memoryMaxBytes: memMax === undefined || memMax >= 2 ** 62 ? null : memMax,
    memoryCurrentBytes: num(await at('memory', 'memory.usage_in_bytes')) ?? 0,
    memoryPeakBytes: num(await at('memory', 'memory.max_usage_in_bytes')),
    oomKills: keyed(await at('memory', 'memory.oom_control'), 'oom_kill'),
    pidsMax,
    pidsCurrent,
    cpuQuota: quota > 0 ? quota / period : null,
    cpuUsageUsec: usageNs === undefined ? undefined : Math.round(usageNs / 1000),
  };
}

/**
 * `argv` run inside the group from its first instruction: a fixed POSIX sh program (no
 * interpolation: the files and argv are its positional parameters) writes its own pid to each
 * `cgroup.procs` file, then execs argv. A VMM that daemonizes (QEMU `-daemonize`) or forks
 * helpers stays inside: children inherit their parent's group.
 */
export function enterArgv(procs: string[], argv: string[]): string[] {
  if (!procs.length) return argv;
  return ['sh', '-c', ENTER, 'banger-cgroup-enter', ...procs, '--', ...argv];
}

const ENTER = 'for f do if [ "$f" = -- ]; then shift; break; fi; echo $$ > "$f" || exit 126; shift; done; exec "$@"';
