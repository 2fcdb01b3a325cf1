import type { VmNetwork } from '../network/service.js';
import type { Subnet } from '../network/subnet.js';
import { kernelCmdline } from './cmdline.js';
import type { KernelView } from './deps.js';
import type { DiskSpec, LaunchSpec } from './drivers/types.js';
import type { VmFiles } from './files.js';
import type { VmRecord } from './store.js';

/**
 * What the driver launches, from the VM record (pure; unit-tested).
 * - kernel: the bzImage (`vmlinuz`) when present, else the PVH `vmlinux`; `-initrd` when any.
 * - disks in guest order: vda root, vdb seed, then the work disk and the kernel's read-only
 *   modules disk when present; `banger.modules=/dev/vdX` on the command line names the latter.
 * - ACPI on for a kernel with an initramfs: such a kernel is modular (Debian's) and its
 *   initramfs insmods virtio_mmio, which never sees `virtio_mmio.device=` on the command line,
 *   so the devices are announced by ACPI instead.
 * - under TCG, `tsc_early_khz` (see cmdline.ts).
 */
export function launchSpec(o: { instance: string; vm: VmRecord & { ip: string }; kernel: KernelView; files: VmFiles; net: VmNetwork; subnet: Subnet; kvm: boolean; tscKhz?: number }): LaunchSpec {
  const { vm, files } = o;
  const disks: DiskSpec[] = [
    { id: 'root', ...vm.spec.rootDisk },
    { id: 'seed', path: files.seed, format: 'raw' },
  ];
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
    kernel: o.kernel.vmlinuz ?? o.kernel.vmlinux!,
    initrd: o.kernel.initrd,
    cmdline: kernelCmdline({ ip: vm.ip, gateway: o.subnet.gateway, netmask: o.subnet.netmask, hostname: vm.name, firstBoot: vm.spec.firstBoot, tscKhz: o.kvm ? undefined : o.tscKhz, modulesDevice }),
    disks,
    net: { tap: o.net.tap, mac: o.net.mac },
    kvm: o.kvm,
    acpi: !!o.kernel.initrd,
    ...(vm.spec.mounts?.length ? { mounts: vm.spec.mounts } : {}),
  };
}
