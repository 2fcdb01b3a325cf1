import { BangerError, ErrorCode } from '../core/errors.js';

/**
 * JSON-RPC 2.0 over a Unix socket, one JSON message per line (NDJSON).
 * - request      {jsonrpc, id, method, params}
 * - response     {jsonrpc, id, result} | {jsonrpc, id, error: {code, message, data: {code, hint, details}}}
 * - progress     {jsonrpc, method: "$/progress", params: {id, event}}        daemon → client
 * - cancel       {jsonrpc, method: "$/cancel", params: {id}}                 client → daemon
 * Closing the connection cancels every request still running on it.
 *
 * This module is the wire format only (no zod), so the CLI's client path stays light;
 * method definitions and input schemas live in protocol.ts.
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
