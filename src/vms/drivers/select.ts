import { BangerError, ErrorCode } from '../../core/errors.js';
import { kvmUsable, type HostProbe } from '../../core/host.js';
import type { VmmKind } from './types.js';

/** The VMM a VM will use, with the reason shown by `vm show` (stored in vms.vmm_reason). */
export interface VmmChoice {
  kind: VmmKind;
  kvm: boolean;
  reason: string;
}

/**
 * Pick the VMM. `auto`: Firecracker when its binary is present and KVM is usable, else QEMU
 * (KVM when usable, else TCG). Asking explicitly for firecracker where it cannot run is an
 * E_VMM error that says why.
 */
export async function selectVmm(requested: 'auto' | 'qemu' | 'firecracker', host: HostProbe, binaries: { qemu: string; firecracker: string }): Promise<VmmChoice> {
  const kvm = await kvmUsable(host);
  const accel = kvm.usable ? 'accel kvm' : `accel tcg (KVM not usable: ${kvm.reason})`;
  const fcPath = await host.which(binaries.firecracker);
  if (requested === 'firecracker') {
    if (!fcPath) throw new BangerError(ErrorCode.Vmm, `--vmm firecracker: binary '${binaries.firecracker}' not found`, { hint: 'install firecracker, or use --vmm qemu' });
    if (!kvm.usable) throw new BangerError(ErrorCode.Vmm, `--vmm firecracker: KVM not usable: ${kvm.reason}`, { hint: 'use --vmm qemu (TCG works without KVM)' });
    throw new BangerError(ErrorCode.Vmm, '--vmm firecracker: the firecracker driver is not available in this build', { hint: 'use --vmm qemu' });
  }
  if (!(await host.which(binaries.qemu))) {
    throw new BangerError(ErrorCode.Vmm, `QEMU binary '${binaries.qemu}' not found`, { hint: 'apt-get install qemu-system-x86 qemu-utils' });
  }
  if (requested === 'qemu') return { kind: 'qemu', kvm: kvm.usable, reason: `requested qemu; ${accel}` };
  let why: string;
  if (!fcPath) why = 'firecracker: binary not found';
  else if (!kvm.usable) why = `firecracker: KVM not usable: ${kvm.reason}`;
  else why = 'firecracker: driver not available in this build';
  return { kind: 'qemu', kvm: kvm.usable, reason: `auto: ${why} → qemu; ${accel}` };
}
