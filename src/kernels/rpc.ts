import type { MethodTable } from '../rpc/protocol.js';
import type { KernelService } from './service.js';

export function kernelMethods(_svc: KernelService): MethodTable {
  return {};
}
