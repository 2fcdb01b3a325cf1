/**
 * `banger/contract`: the wire types of banger's JSON-RPC surface (the methods map with each
 * method's params schema and result type, and the result shapes), for programs that speak
 * JSON-RPC to bangerd themselves or want the exact types the SDK is built on.
 */
export {
  methods,
  legacyAliases,
  ExecParams,
  type Methods,
  type MethodName,
  type MethodSpec,
  type Params,
  type ParsedParams,
  type Result,
  type StreamStarted,
} from '../rpc/contract.js';
export { Name, Size } from '../rpc/schemas.js';
export type * from '../rpc/types.js';
export type { ProgressEvent } from '../core/operation.js';
export type { RpcErrorData } from '../rpc/wire.js';
