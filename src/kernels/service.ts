import type { Context } from '../daemon/context.js';

/** Kernels: catalog, pull, import, list, show, delete. (placeholder) */
export class KernelService {
  constructor(readonly ctx: Context) {}
}
