import type { Context } from '../daemon/context.js';
import type { ImageService } from '../images/service.js';
import type { KernelService } from '../kernels/service.js';
import type { NetworkService } from '../network/service.js';

/** VMs: lifecycle, disks, SSH, reconcile. (placeholder) */
export class VmService {
  constructor(readonly ctx: Context, readonly deps: { kernels: KernelService; images: ImageService; network: NetworkService }) {}

  /** Called once at daemon start: re-adopt running VMs, mark dead ones stopped, remove orphans. */
  async reconcile(): Promise<void> {}
}
