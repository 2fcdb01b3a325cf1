import type { Context } from '../daemon/context.js';
import type { KernelService } from '../kernels/service.js';

/** Images: OCI pull → ext4, import, list, show, rm. (placeholder) */
export class ImageService {
  constructor(readonly ctx: Context, readonly deps: { kernels: KernelService }) {}
}
