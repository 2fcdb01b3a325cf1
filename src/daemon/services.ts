import type { Context } from '../core/context.js';
import type { MethodTable } from '../rpc/protocol.js';
import { KernelService } from '../kernels/service.js';
import { kernelMethods } from './handlers/kernels.js';
import { ImageService } from '../images/service.js';
import { imageMethods } from './handlers/images.js';
import { NetworkService } from '../network/service.js';
import { VmService } from '../vms/service.js';
import { vmMethods } from './handlers/vms.js';
import { VmTableUsage } from '../vms/usage.js';
import { setAgentLog } from '../vms/agent.js';

/** One service per domain, each a plain class with injected boundaries. */
export interface Services {
  kernels: KernelService;
  images: ImageService;
  network: NetworkService;
  vms: VmService;
}

export function createServices(ctx: Context): Services {
  // Kernels and images ask vms which VMs use them through VmUsage (vms owns the vms table).
  const vmUsage = new VmTableUsage(ctx.db);
  const kernels = new KernelService(ctx, { vmUsage });
  const images = new ImageService(ctx, { kernels, vmUsage });
  const network = new NetworkService(ctx);
  const vms = new VmService(ctx, { kernels, images, network });
  setAgentLog(ctx.log.child({ component: 'agent' }));
  return { kernels, images, network, vms };
}

export function serviceMethods(s: Services): MethodTable {
  return { ...kernelMethods(s.kernels), ...imageMethods(s.images, s.vms.preparer, s.vms), ...vmMethods(s.vms) };
}
