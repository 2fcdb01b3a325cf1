import { bind, type HandlersFor } from '../../rpc/bind.js';
import type { MethodTable } from '../../rpc/protocol.js';
import type { ImageService } from '../../images/service.js';

/** `image.*`, `registry.*` and `system.prune`: the contract's image methods bound to the image service. */
export function imageMethods(svc: ImageService): MethodTable {
  const h: HandlersFor<'image.'> & HandlersFor<'registry.'> & HandlersFor<'system.'> = {
    'image.pull': async (p, { signal, progress }) => svc.pull(p, { signal, progress }),
    'image.import': async (p, { signal, progress }) => svc.importImage(p, { signal, progress }),
    'image.list': async () => svc.list(),
    'image.show': async (p) => svc.show(p.name),
    'image.rm': async (p) => svc.rm(p.name, p.force),
    'system.prune': async () => svc.pruneCache(),
    'registry.login': async (p, { signal }) => svc.login(p, { signal }),
    'registry.logout': async (p) => svc.logout(p.registry),
  };
  return bind(h);
}
