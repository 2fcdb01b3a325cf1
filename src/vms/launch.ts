import type { VmNetwork } from '../network/service.js';
import type { Subnet } from '../network/subnet.js';
import { kernelCmdline } from './cmdline.js';
import type { DiskSpec, KernelFiles, LaunchCgroup, LaunchSpec, VmmDriver } from './drivers/types.js';
import type { VmFiles } from './files.js';
import type { VmRecord } from './store.js';

/**
 * What the driver launches, from the VM record (pure; unit-tested). VMM-neutral: the driver
 * picks the kernel file (`bootKernel`) and adds its own options when it launches.
 * - disks in guest order: vda root (`rootDisk`, what `prepareRootDisk` returned, else the
 *   record's), vdb seed, then the work disk and the kernel's read-only modules disk when
 *   present; `banger.modules=/dev/vdX` on the command line names the latter.
 * - under TCG (`kvm` false), `tsc_early_khz` (see cmdline.ts).
 */
export function launchSpec(o: {
  instance: string;
  vm: Pick<VmRecord, 'id' | 'name' | 'spec'> & { ip: string };
  kernel: KernelFiles;
  driver: Pick<VmmDriver, 'bootKernel'>;
  files: VmFiles;
  net: VmNetwork;
  subnet: Subnet;
  kvm: boolean;
  tscKhz?: number;
  rootDisk?: DiskSpec;
  /** Mask the lean-boot units on the command line (config vm.leanBoot). */
  lean?: boolean;
  /** The VMM's cgroup (limits.ts cgroupStep), when the VM has cgroup limits. */
  cgroup?: LaunchCgroup;
}): LaunchSpec {
  const { vm, files } = o;
  const { diskIops, diskBps } = vm.spec.limits ?? {};
  const boot = o.driver.bootKernel(o.kernel);
  const disks: DiskSpec[] = [o.rootDisk ?? { id: 'root', ...vm.spec.rootDisk }, { id: 'seed', path: files.seed, format: 'raw' }];
  if (vm.spec.workDiskBytes !== undefined) disks.push({ id: 'work', path: files.work, format: 'raw' });
  let modulesDevice: string | undefined;
  if (o.kernel.modulesImage) {
    modulesDevice = `/dev/vd${String.fromCharCode(97 + disks.length)}`;
    disks.push({ id: 'modules', path: o.kernel.modulesImage, format: 'raw', readOnly: true });
  }
  return {
    id: vm.id,
    instance: o.instance,
    name: vm.name,
    files,
    vcpu: vm.spec.vcpu,
    memoryMiB: vm.spec.memoryMiB,
    kernel: boot.path,
    kernelFormat: boot.format,
    initrd: o.kernel.initrd,
    cmdline: kernelCmdline({
      ip: vm.ip,
      gateway: o.subnet.gateway,
      netmask: o.subnet.netmask,
      hostname: vm.name,
      firstBoot: vm.spec.firstBoot,
      tscKhz: o.kvm ? undefined : o.tscKhz,
      modulesDevice,
      lean: o.lean,
    }),
    disks,
    net: { tap: o.net.tap, mac: o.net.mac },
    kvm: o.kvm,
    ...(vm.spec.mounts?.length ? { mounts: vm.spec.mounts } : {}),
    ...(o.cgroup ? { cgroup: o.cgroup } : {}),
    ...(diskIops || diskBps ? { diskLimits: { ...(diskIops ? { iops: diskIops } : {}), ...(diskBps ? { bps: diskBps } : {}) } } : {}),
  };
}
