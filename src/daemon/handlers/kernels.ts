import { bind, type HandlersFor } from '../../rpc/bind.js';
import type { MethodTable } from '../../rpc/protocol.js';
import type { KernelService } from '../../kernels/service.js';

/** `kernel.*`: the contract's kernel methods bound to the kernel service. */
export function kernelMethods(svc: KernelService): MethodTable {
  const h: HandlersFor<'kernel.'> = {
    'kernel.list': async () => svc.list(),
    'kernel.catalog': async ({ catalogs }, { signal }) => {
      const r = await svc.catalogReport({ signal, catalogs });
      return {
        entries: r.entries,
        warnings: r.failures.map((f) => ({ catalog: f.catalog, code: f.error.code, message: f.error.message, hint: f.error.hint })),
      };
    },
    'kernel.show': async ({ name }) => svc.show(name),
    'kernel.pull': async ({ name, force, catalogs }, { signal, progress }) => svc.pull(name, { force, signal, progress, catalogs }),
    'kernel.rm': async ({ name, force }) => svc.rm(name, { force }),
    'kernel.import': async (p, { signal }) => svc.import(p.name, { ...p, signal }),
  };
  return bind(h);
}
