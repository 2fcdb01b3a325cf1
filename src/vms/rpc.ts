import type { MethodTable } from '../rpc/protocol.js';
import type { VmService } from './service.js';

export function vmMethods(_svc: VmService): MethodTable {
  return {};
}
