/**
 * What lower domains may ask about VMs without reading the `vms` table: which VMs refer to a
 * kernel or an image (so `kernel rm` / `image rm` refuse while one is in use). Declared in core
 * because the askers (kernels, images) sit below the owner (vms, `vms/usage.ts` implements it
 * over its own table); the daemon wiring (`daemon/services.ts`) hands the owner's
 * implementation down. Answers are VM names, sorted; they never throw for an unknown name.
 */
export interface VmUsage {
  /** VMs whose record names kernel `name`. */
  vmsUsingKernel(name: string): string[];
  /** VMs whose record names image `name`. */
  vmsUsingImage(name: string): string[];
  /** Base disks (an image's prepared disk) some VM's root disk stands on: never removed while listed. */
  baseDisksInUse(): string[];
}

/** For a service used without VMs (benchmarks, unit tests of one domain): no VM uses anything. */
export const noVms: VmUsage = {
  vmsUsingKernel: () => [],
  vmsUsingImage: () => [],
  baseDisksInUse: () => [],
};
