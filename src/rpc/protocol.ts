import type { Socket } from 'node:net';
import type { z } from 'zod';
import { BangerError, ErrorCode } from '../core/errors.js';
import type { OperationContext } from '../core/operation.js';

export { LineSplitter, LineTooLongError, RpcCode, fromRpcError, toRpcError, type ProgressEvent, type RpcErrorData } from './wire.js';

/** What a handler receives besides its params: the operation's signal and progress sink. */
export interface MethodContext extends OperationContext {
  /**
   * Streams (vm exec / vm cp): after this method's successful reply the connection stops
   * speaking JSON-RPC and `take` owns the raw socket. Refused (socket closed) when other
   * requests are running on the connection or bytes follow the request. See docs/agent.md.
   */
  upgrade?(take: (sock: Socket) => void): void;
}

export interface Method<P = unknown> {
  schema: z.ZodType<P>;
  handler(params: P, ctx: MethodContext): Promise<unknown>;
}

export type MethodTable = Record<string, Method<any>>;

/** Define an RPC method: params are validated against `schema` at the boundary. */
export function method<S extends z.ZodTypeAny>(schema: S, handler: (params: z.infer<S>, ctx: MethodContext) => Promise<unknown>): Method<z.infer<S>> {
  return { schema, handler };
}

/** Turn a zod failure into an error naming the field. */
export function invalidParams(methodName: string, error: z.ZodError): BangerError {
  const issue = error.issues[0]!;
  const field = issue.path.join('.') || '(params)';
  return new BangerError(ErrorCode.Invalid, `${methodName}: invalid field '${field}': ${issue.message}`, { details: { field } });
}

/** Common zod pieces for RPC inputs (defined with the contract). */
export { Name } from './schemas.js';
