import type { CgroupHost } from '../core/cgroup.js';
import { createGroup, groupName, groupUsage, listGroups, procsFiles, removeGroup, type CgroupLimits } from '../core/cgroup-group.js';
import type { Config } from '../core/config.js';
import { BangerError, ErrorCode } from '../core/errors.js';
import type { StepRunner } from '../core/steps.js';
import type { VmCgroupUsage, VmLimits } from '../core/shapes/vm.js';
import type { LaunchCgroup, VmmDriver } from './drivers/types.js';
import type { VmRecord } from './store.js';

/**
 * Per-VM resource limits (issue 24, docs/limits.md), the vms side: what a create fixes in
 * `spec.limits` (`limitsFor`), the VMM's cgroup made before launch and removed with the VM
 * (`cgroupStep`, `removeVmGroup`), orphan groups removed by reconcile, usage for `vm show`.
 * The cgroup files themselves are core/cgroup-group.ts; disk throttling is the drivers' (QEMU
 * `-drive throttling.*`, Firecracker `rate_limiter`).
 */

/** Asked for at create (`vm create --cpu-quota / --disk-iops / --disk-bps`). */
export interface LimitParams {
  cpuQuota?: number;
  diskIops?: number;
  diskBps?: number;
}

/**
 * The limits a new VM gets: memory (RAM + config limits.memoryOverheadMiB) and pids in a cgroup
 * whenever the host has a usable one and config limits.cgroup is on (else none, silently: the
 * doctor warns), plus what was asked for. A CPU quota needs a cgroup: asked for on a host without
 * one, it is refused with E_PLATFORM naming the reason. Disk limits need none.
 */
export function limitsFor(cfg: Config['limits'], p: LimitParams, memoryMiB: number, host: CgroupHost): VmLimits | undefined {
  const cpuQuota = p.cpuQuota ?? cfg.cpuQuota;
  const diskIops = p.diskIops ?? cfg.diskIops;
  const diskBps = p.diskBps ?? cfg.diskBps;
  const cgroup = cfg.cgroup && host.version !== 0;
  if (cpuQuota !== undefined && !cgroup) {
    const why = host.version === 0 ? host.reason : 'config limits.cgroup is false';
    throw new BangerError(ErrorCode.Platform, `--cpu-quota needs a cgroup for the VMM, and this host has none usable: ${why}`, {
      hint: 'see banger doctor (cgroup check); drop --cpu-quota (and config limits.cpuQuota) to run without it',
      details: { field: '--cpu-quota' },
    });
  }
  const out: VmLimits = {
    ...(cgroup ? { memoryMaxMiB: memoryMiB + cfg.memoryOverheadMiB, pidsMax: cfg.pidsMax } : {}),
    ...(cpuQuota !== undefined ? { cpuQuota } : {}),
    ...(diskIops !== undefined ? { diskIops } : {}),
    ...(diskBps !== undefined ? { diskBps } : {}),
  };
  return Object.keys(out).length ? out : undefined;
}

/** The cgroup limits of a spec's limits, or undefined when the VM runs without a group. */
export function cgroupLimits(l: VmLimits | undefined): CgroupLimits | undefined {
  if (l?.memoryMaxMiB === undefined || l.pidsMax === undefined) return undefined;
  return { memoryBytes: l.memoryMaxMiB * 1024 * 1024, pids: l.pidsMax, ...(l.cpuQuota !== undefined ? { cpuQuota: l.cpuQuota } : {}) };
}

/**
 * step cgroup (before mounts and vmm): the VM's group `banger/<instance>-<vm id>` with its
 * limits, undo registered first (removal is idempotent). A driver whose VMM makes its own group
 * (`features.ownCgroup`: Firecracker's jailer, `--cgroup`) gets the limits and no group. The
 * VMM and its helpers then start inside (`LaunchCgroup.procs`, core/cgroup-group.ts enterArgv).
 */
export async function cgroupStep(
  o: { cgroups: () => Promise<CgroupHost>; instance: string },
  vm: Pick<VmRecord, 'id' | 'name' | 'spec'>,
  driver: Pick<VmmDriver, 'features'>,
  steps: StepRunner,
): Promise<LaunchCgroup | undefined> {
  const limits = cgroupLimits(vm.spec.limits);
  if (!limits) return undefined;
  const host = await o.cgroups();
  if (host.version === 0)
    throw new BangerError(ErrorCode.Platform, `vm '${vm.name}' has cgroup limits and this host has no usable cgroup: ${host.reason}`, {
      hint: 'see banger doctor (cgroup check)',
      details: { step: 'cgroup' },
    });
  if (driver.features.ownCgroup) return { version: host.version, limits, procs: [] };
  const name = groupName(o.instance, vm.id);
  return steps.run(
    'cgroup',
    async () => {
      steps.undo('cgroup', () => removeGroup(host, name));
      await createGroup(host, name, limits);
      return { version: host.version, limits, procs: procsFiles(host, name) };
    },
    { message: `cgroup v${host.version} ${name}`, silent: true },
  );
}

/** Remove a VM's group (teardown after its VMM is gone); none, or no cgroup here = nothing to do. */
export async function removeVmGroup(o: { cgroups: () => Promise<CgroupHost>; instance: string }, vm: Pick<VmRecord, 'id' | 'spec'>): Promise<void> {
  if (!cgroupLimits(vm.spec.limits)) return;
  const host = await o.cgroups();
  if (host.version !== 0) await removeGroup(host, groupName(o.instance, vm.id));
}

/** Limits and usage of a VM's group, for `vm show` (undefined: no group, e.g. stopped). */
export async function vmCgroupUsage(
  o: { cgroups: () => Promise<CgroupHost>; instance: string },
  vm: Pick<VmRecord, 'id' | 'spec'>,
): Promise<VmCgroupUsage | undefined> {
  if (!cgroupLimits(vm.spec.limits)) return undefined;
  const host = await o.cgroups();
  return host.version === 0 ? undefined : groupUsage(host, groupName(o.instance, vm.id));
}

/** Groups of this instance that no VM row (of `ids`) owns: left by a daemon that died mid-create or mid-rm. */
export async function orphanGroups(host: CgroupHost, instance: string, ids: Set<string>): Promise<string[]> {
  if (host.version === 0) return [];
  return (await listGroups(host, instance)).filter((n) => !ids.has(n.slice(instance.length + 1)));
}
