import { z } from 'zod';
import { method, Name, type MethodTable } from '../rpc/protocol.js';
import type { KernelService } from './service.js';

/**
 * Catalog URLs a client may add (the CLI forwards BANGER_KERNEL_CATALOGS): http(s) only, so a
 * client cannot make the root daemon read local files (file:// catalogs belong in the config).
 */
const ClientCatalogs = z
  .array(z.string().max(2048).url().refine((u) => /^https?:\/\//i.test(u), 'must be an http:// or https:// URL (file:// catalogs go in the daemon config)'))
  .max(16)
  .optional();

const AbsPath = z.string().min(1).max(4096).refine((p) => p.startsWith('/'), 'must be an absolute path');

/** `kernel.*` RPC methods; every input is validated here, at the boundary. */
export function kernelMethods(svc: KernelService): MethodTable {
  return {
    'kernel.list': method(z.object({}).strict(), async () => ({ kernels: svc.list() })),
    'kernel.catalog': method(z.object({ catalogs: ClientCatalogs }).strict(), async ({ catalogs }, { signal }) => {
      const r = await svc.catalogReport({ signal, catalogs });
      return { entries: r.entries, warnings: r.failures.map((f) => ({ catalog: f.catalog, code: f.error.code, message: f.error.message, hint: f.error.hint })) };
    }),
    'kernel.show': method(z.object({ name: Name }).strict(), async ({ name }) => svc.show(name)),
    'kernel.pull': method(z.object({ name: Name, force: z.boolean().default(false), catalogs: ClientCatalogs }).strict(), async ({ name, force, catalogs }, { signal, progress }) =>
      svc.pull(name, { force, signal, progress, catalogs }),
    ),
    'kernel.delete': method(z.object({ name: Name, force: z.boolean().default(false) }).strict(), async ({ name, force }) => svc.delete(name, { force })),
    'kernel.import': method(
      z
        .object({
          name: Name,
          vmlinux: AbsPath,
          initrd: AbsPath.optional(),
          modules: AbsPath.optional(),
          kernelVersion: z.string().min(1).max(128).regex(/^[A-Za-z0-9._+~-]+$/, 'letters, digits and . _ + ~ - only').optional(),
          distro: z.string().min(1).max(64).regex(/^[A-Za-z0-9._-]+$/, 'letters, digits and . _ - only').optional(),
          arch: z.string().min(1).max(32).regex(/^[A-Za-z0-9_]+$/, 'letters, digits and _ only').optional(),
          force: z.boolean().default(false),
        })
        .strict(),
      async (p, { signal }) => svc.import(p.name, { ...p, signal }),
    ),
  };
}
