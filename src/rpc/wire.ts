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
/** Progress notifications carry the core type unchanged (`core/operation.ts`). */
export type { ProgressEvent } from '../core/operation.js';

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

/** Thrown by `LineSplitter.push` when a line grows past its limit (the splitter is then spent). */
export class LineTooLongError extends Error {
  constructor(readonly maxBytes: number) {
    super(`message larger than ${maxBytes} bytes`);
  }
}

/**
 * Splits a byte stream into lines (UTF-8, '\n'-terminated; blank lines skipped). Linear time:
 * each byte is scanned once and a line's pieces are joined once, when its newline arrives.
 * With `maxBytes`, a line longer than that throws `LineTooLongError` as soon as the buffered
 * part exceeds it, before its end arrives, so memory stays bounded by `maxBytes` + one chunk.
 */
export class LineSplitter {
  private parts: Buffer[] = [];
  private size = 0;
  constructor(private readonly maxBytes = Number.POSITIVE_INFINITY) {}

  /** Bytes of an unfinished line held so far. */
  get pending(): number {
    return this.size;
  }

  push(chunk: Buffer | string, onLine: (line: string) => void): void {
    const buf = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk;
    let start = 0;
    let nl: number;
    while ((nl = buf.indexOf(0x0a, start)) >= 0) {
      const piece = buf.subarray(start, nl);
      start = nl + 1;
      if (this.size + piece.length > this.maxBytes) throw new LineTooLongError(this.maxBytes);
      let line = piece;
      if (this.size > 0) {
        this.parts.push(piece);
        line = Buffer.concat(this.parts, this.size + piece.length);
        this.parts = [];
        this.size = 0;
      }
      const text = line.toString('utf8');
      if (text.trim()) onLine(text);
    }
    if (start < buf.length) {
      const rest = buf.subarray(start);
      if (this.size + rest.length > this.maxBytes) throw new LineTooLongError(this.maxBytes);
      this.parts.push(rest);
      this.size += rest.length;
    }
  }
}
