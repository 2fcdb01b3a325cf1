import type { MethodTable } from '../rpc/protocol.js';
import type { ImageService } from './service.js';

export function imageMethods(_svc: ImageService): MethodTable {
  return {};
}
