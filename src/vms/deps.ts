import { KERNEL_FILES } from '../kernels/files.js';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { BangerError, ErrorCode } from '../core/errors.js';
import type { Context } from '../core/context.js';
import type { ImageService } from '../images/service.js';
import type { KernelService } from '../kernels/service.js';
import type { KernelFiles } from './drivers/types.js';

/**
 * The narrow views the VM service needs of kernels and images. They go through the owning
 * services' `get(name)` (throwing their E_NOT_FOUND with a hint); when a service does not
 * offer `get`, the records are read from their tables (same schema, migration 1).
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

type Getter<T> = { get?: (name: string) => T | Promise<T>; defaultName?: () => string | Promise<string> };

export async function getKernel(ctx: Context, svc: KernelService, name: string): Promise<KernelView> {
  const g = svc as unknown as Getter<KernelView>;
  if (typeof g.get === 'function') return g.get.call(svc, name);
  const r = ctx.db.prepare('SELECT name, path FROM kernels WHERE name = ?').get(name) as { name: string; path: string } | undefined;
  if (!r) throw new BangerError(ErrorCode.NotFound, `kernel '${name}' is not pulled`, { hint: `banger kernel pull ${name}`, details: { kernel: name } });
  const f = (n: string) => (existsSync(join(r.path, n)) ? join(r.path, n) : undefined);
  return { name: r.name, dir: r.path, vmlinux: f(KERNEL_FILES.vmlinux), vmlinuz: f(KERNEL_FILES.vmlinuz), initrd: f(KERNEL_FILES.initrd), modulesImage: f(KERNEL_FILES.modules) };
}

export async function defaultKernelName(ctx: Context, svc: KernelService): Promise<string> {
  const g = svc as unknown as Getter<KernelView>;
  return typeof g.defaultName === 'function' ? g.defaultName.call(svc) : ctx.config.defaultKernel;
}

export async function getImage(ctx: Context, svc: ImageService, name: string): Promise<ImageView> {
  const g = svc as unknown as Getter<ImageView>;
  if (typeof g.get === 'function') return g.get.call(svc, name);
  const r = ctx.db.prepare('SELECT name, rootfs_path, kernel_ref, from_registry FROM images WHERE name = ?').get(name) as
    | { name: string; rootfs_path: string; kernel_ref: string | null; from_registry: number }
    | undefined;
  if (!r) throw new BangerError(ErrorCode.NotFound, `image '${name}' not found`, { hint: "see 'banger image list'", details: { image: name } });
  return { name: r.name, rootfsPath: r.rootfs_path, kernelRef: r.kernel_ref, fromRegistry: r.from_registry === 1 };
}
