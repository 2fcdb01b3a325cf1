import { z } from 'zod';
import { method, Name, type MethodTable } from '../rpc/protocol.js';
import type { ImageService } from './service.js';

const Size = z.number().int().positive().multipleOf(4096, 'must be a multiple of 4096 bytes').optional();
const AbsPath = z.string().min(1).max(4096).refine((p) => p.startsWith('/'), 'must be an absolute path');
const Registry = z.string().min(1).max(255).regex(/^(?:https?:\/\/)?[a-zA-Z0-9.[\]:-]+(?:\/.*)?$/, 'must be a registry host[:port]');

/** RPC surface of the image domain (params validated by the server before handlers run). */
export function imageMethods(svc: ImageService): MethodTable {
  return {
    'image.pull': method(
      z.object({ ref: z.string().min(1).max(512), name: Name.optional(), kernelRef: Name.optional(), platform: z.string().max(64).optional(), sizeBytes: Size }).strict(),
      async (p, { signal, progress }) => svc.pull(p, { signal, progress }),
    ),
    'image.import': method(
      z.object({ name: Name, rootfsTar: AbsPath.optional(), rootfsDir: AbsPath.optional(), kernelRef: Name.optional(), sizeBytes: Size }).strict(),
      async (p, { signal, progress }) => svc.importImage(p, { signal, progress }),
    ),
    'image.list': method(z.object({}).strict(), async () => svc.list()),
    'image.show': method(z.object({ name: Name }).strict(), async (p) => svc.show(p.name)),
    'image.rm': method(z.object({ name: Name, force: z.boolean().default(false) }).strict(), async (p) => svc.remove(p.name, p.force)),
    'image.pruneCache': method(z.object({}).strict(), async () => svc.pruneCache()),
    'system.prune': method(z.object({}).strict(), async () => svc.pruneCache()),
    'registry.login': method(
      z.object({ registry: Registry, username: z.string().min(1).max(256), password: z.string().min(1).max(8192) }).strict(),
      async (p, { signal }) => svc.login(p, { signal }),
    ),
    'registry.logout': method(z.object({ registry: Registry }).strict(), async (p) => svc.logout(p.registry)),
  };
}
