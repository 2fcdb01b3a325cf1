import { z } from 'zod';
import { BangerError, ErrorCode } from '../core/errors.js';

/**
 * JSON-RPC 2.0 over a Unix socket, one JSON message per line (NDJSON).
 * - request      {jsonrpc, id, method, params}
 * - response     {jsonrpc, id, result} | {jsonrpc, id, error: {code, message, data: {code, hint, details}}}
 * - progress     {jsonrpc, method: "$/progress", params: {id, event}}        daemon → client
 * - cancel       {jsonrpc, method: "$/cancel", params: {id}}                 client → daemon
 * Closing the connection cancels every request still running on it.
 */
export interface ProgressEvent {
  /** Stage name, e.g. "download", "extract", "layer", "mkfs", "boot". */
  stage: string;
  message?: string;
  /** Sub-task key, e.g. a layer digest. */
  key?: string;
  current?: number;
  total?: number;
  done?: boolean;
  /** Milliseconds since the operation started. */
  elapsedMs?: number;
}

export interface MethodContext {
  signal: AbortSignal;
  progress(ev: ProgressEvent): void;
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

/** JSON-RPC numeric codes; banger's stable string code travels in error.data.code. */
export const RpcCode = { ParseError: -32700, InvalidRequest: -32600, MethodNotFound: -32601, InvalidParams: -32602, Internal: -32603, App: -32000 };

export interface RpcErrorData {
  code: string;
  hint?: string;
  details?: Record<string, unknown>;
}

export function toRpcError(e: unknown): { code: number; message: string; data: RpcErrorData } {
  if (e instanceof BangerError) return { code: RpcCode.App, message: e.message, data: { code: e.code, hint: e.hint, details: e.details } };
  const msg = e instanceof Error ? e.message : String(e);
  return { code: RpcCode.Internal, message: msg, data: { code: ErrorCode.Internal, hint: 'this is a bug in banger; see the daemon log' } };
}

export function fromRpcError(err: { code: number; message: string; data?: RpcErrorData }): BangerError {
  return new BangerError(err.data?.code ?? ErrorCode.Daemon, err.message, { hint: err.data?.hint, details: err.data?.details });
}

/** Turn a zod failure into an error naming the field. */
export function invalidParams(methodName: string, error: z.ZodError): BangerError {
  const issue = error.issues[0]!;
  const field = issue.path.join('.') || '(params)';
  return new BangerError(ErrorCode.Invalid, `${methodName}: invalid field '${field}': ${issue.message}`, { details: { field } });
}

/** Splits a byte stream into lines. */
export class LineSplitter {
  private buf = '';
  push(chunk: string, onLine: (line: string) => void): void {
    this.buf += chunk;
    let i: number;
    while ((i = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, i);
      this.buf = this.buf.slice(i + 1);
      if (line.trim()) onLine(line);
    }
  }
}

/** Common zod pieces for RPC inputs. */
export const Name = z
  .string()
  .min(1)
  .max(63)
  .regex(/^[a-zA-Z0-9][a-zA-Z0-9._-]*$/, 'must start with a letter or digit and contain only letters, digits, ".", "_" and "-"');
