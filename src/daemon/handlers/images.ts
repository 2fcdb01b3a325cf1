import { errorMessage } from '../../core/errors.js';
import { bind, type HandlersFor } from '../../rpc/bind.js';
import type { MethodTable } from '../../rpc/protocol.js';
import type { ImageService } from '../../images/service.js';
import type { ImagePreparer } from '../../vms/prepare.js';
import type { VmService } from '../../vms/service.js';

/**
 * `image.*`, `registry.*` and `system.prune`: the contract's image methods bound to the image
 * service; `image.prepare` (and `image.pull --prepare`) run a builder VM, so they go to the VM
 * domain's preparer.
 */
export function imageMethods(svc: ImageService, preparer: ImagePreparer, vms: VmService): MethodTable {
  const h: HandlersFor<'image.'> & HandlersFor<'registry.'> & HandlersFor<'system.'> = {
    'image.pull': async ({ prepare, packageMirror, packageProxy, ...p }, { signal, progress }) => {
      const rec = await svc.pull(p, { signal, progress });
      if (!prepare) return rec;
      const r = await preparer.prepare({ image: rec.name, packageMirror, packageProxy }, { signal, progress });
      return { ...rec, prepared: r.record ?? null };
    },
    'image.prepare': async (p, { signal, progress }) => {
      const r = await preparer.prepare(
        { image: p.name, kernel: p.kernel, packageMirror: p.packageMirror, packageProxy: p.packageProxy, force: p.force, vmm: p.vmm },
        { signal, progress },
      );
      if (!(p.warm ?? vms.ctx.config.firstBoot.warmAfterPrepare)) return r;
      // The prepare stands whatever the warm does; a failed warm is said, not thrown.
      try {
        return { ...r, warm: await vms.warm({ image: p.name, kernel: p.kernel, vmm: p.vmm }, { signal, progress }) };
      } catch (e) {
        return { ...r, warmError: errorMessage(e) };
      }
    },
    'image.import': async (p, { signal, progress }) => svc.importImage(p, { signal, progress }),
    'image.list': async () => svc.list(),
    'image.warm': async (p, op) => vms.warm({ image: p.name, kernel: p.kernel, vcpu: p.vcpu, memoryMiB: p.memoryMiB, vmm: p.vmm }, op),
    'image.show': async (p) => ({ ...(await svc.show(p.name)), warm: await vms.warmOf(p.name) }),
    'image.rm': async (p) => {
      const r = await svc.rm(p.name, p.force);
      await vms.removeWarm(p.name);
      return r;
    },
    'system.prune': async () => {
      const r = await svc.pruneCache();
      const w = await vms.pruneWarm();
      return { ...r, freedBytes: r.freedBytes + w.freedBytes, warmRemoved: w.removed };
    },
    'registry.login': async (p, { signal }) => svc.login(p, { signal }),
    'registry.logout': async (p) => svc.logout(p.registry),
  };
  return bind(h);
}
