import type { KernelFiles } from './drivers/types.js';

/**
 * The narrow views the VM service needs of kernels and images. They come from the owning
 * domains' lookups (`KernelLookup.get`, `ImageLookup.get`, which throw their E_NOT_FOUND with a
 * hint); this domain never reads the `kernels` or `images` tables.
 */
/** A pulled kernel as the VM domain sees it (see drivers/types.ts). */
export type KernelView = KernelFiles;

/** What the VM domain asks of the network domain about leases (the `ip_leases` table is not ours). */
export interface Leases {
  /** Release the VM's lease (idempotent). */
  release(vmName: string): void;
}

export interface ImageView {
  name: string;
  rootfsPath: string;
  kernelRef: string | null;
  fromRegistry: boolean;
}
