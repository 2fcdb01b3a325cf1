import type { KernelRecord } from './record.js';

/**
 * How other domains (images, vms) read kernels: through the kernels service, never the
 * `kernels` table. `KernelService` implements it; the daemon wiring passes it down.
 */
export interface KernelLookup {
  /**
   * The pulled kernel `name`. Throws E_NOT_FOUND (hint: how to pull it) when it is not pulled
   * or its boot files are gone.
   */
  get(name: string): KernelRecord;
  /** The kernel used when none is named (config `defaultKernel`). */
  defaultName(): string;
}

export type { KernelRecord };
