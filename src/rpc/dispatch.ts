import type { Socket } from 'node:net';
import { BangerError, ErrorCode } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import { runOp } from '../core/ops.js';
import { RpcCode, invalidParams, toRpcError, type Method, type MethodTable, type ProgressEvent } from './protocol.js';

/** A JSON-RPC id the server echoes: only strings and finite numbers (anything else is refused). */
export type RpcId = string | number;

/** What one connection gives the dispatcher: a way to reply and its running requests. */
export interface Conn {
  send(msg: unknown): void;
  running: Map<RpcId, AbortController>;
  /** Hands the raw socket to `take` (see MethodContext.upgrade); absent where unsupported. */
  upgrade?(take: (sock: Socket) => void): void;
}

/** Longest text of a client-supplied value (method name, id) put in a reply message or a log line. */
const CLIP = 80;

export function clip(s: string, max = CLIP): string {
  return s.length <= max ? s : `${s.slice(0, max)}…(${s.length} chars)`;
}

function own(o: object, k: string): unknown {
  return Object.hasOwn(o, k) ? (o as Record<string, unknown>)[k] : undefined;
}

function validId(v: unknown): RpcId | undefined {
  if (typeof v === 'string') return v;
  if (typeof v === 'number' && Number.isFinite(v)) return v;
  return undefined;
}

/**
 * Turns request lines into handler calls and replies. The contract, for any input line:
 * - it never throws and never rejects: every failure becomes a JSON-RPC error reply;
 * - a line that is not JSON gets -32700, a value that is not a request object (null, arrays,
 *   numbers, strings, a missing/odd `jsonrpc`, `method` or `id`) gets -32600 with id null;
 * - methods are looked up in a Map built from the table's own properties, so `constructor`,
 *   `toString`, `__proto__` and friends are unknown methods (-32601);
 * - ids are echoed only when they are strings or finite numbers;
 * - at most `maxInflight` requests run at once per connection; an id already running is refused.
 */
export class Dispatcher {
  private readonly methods: Map<string, Method<any>>;
  constructor(
    table: MethodTable,
    private readonly log: Logger,
    private readonly maxInflight: number,
  ) {
    this.methods = new Map(Object.entries(table));
  }

  handle(line: string, conn: Conn): Promise<void> {
    return this.dispatch(line, conn).catch((e: unknown) => {
      // Only reachable through a bug in dispatch itself; the connection and the daemon go on.
      this.log.error('rpc dispatch failed', { error: e instanceof Error ? e.message : String(e) });
    });
  }

  private async dispatch(line: string, conn: Conn): Promise<void> {
    const fail = (id: RpcId | null, code: number, message: string, data: unknown = { code: ErrorCode.Invalid }) =>
      conn.send({ jsonrpc: '2.0', id, error: { code, message, data } });
    let msg: unknown;
    try {
      msg = JSON.parse(line);
    } catch {
      return fail(null, RpcCode.ParseError, 'parse error');
    }
    if (typeof msg !== 'object' || msg === null || Array.isArray(msg)) {
      return fail(null, RpcCode.InvalidRequest, 'invalid JSON-RPC 2.0 request: not an object');
    }
    const name = own(msg, 'method');
    const params = own(msg, 'params');
    if (name === '$/cancel') {
      const target = typeof params === 'object' && params !== null ? validId(own(params, 'id')) : undefined;
      if (target !== undefined) conn.running.get(target)?.abort(new BangerError(ErrorCode.Cancelled, 'cancelled by client'));
      return;
    }
    const id = validId(own(msg, 'id'));
    if (own(msg, 'jsonrpc') !== '2.0' || typeof name !== 'string' || id === undefined) {
      return fail(id ?? null, RpcCode.InvalidRequest, 'invalid JSON-RPC 2.0 request: needs jsonrpc "2.0", a string method and a string or number id');
    }
    const m = this.methods.get(name);
    if (!m) return fail(id, RpcCode.MethodNotFound, `unknown method '${clip(name)}'`);
    if (conn.running.has(id)) return fail(id, RpcCode.InvalidRequest, `request id ${clip(String(id))} is already running on this connection`);
    if (conn.running.size >= this.maxInflight) {
      return fail(id, RpcCode.App, `too many requests running on this connection (limit ${this.maxInflight})`, {
        code: ErrorCode.InUse,
        hint: 'wait for replies before sending more',
      });
    }
    const parsed = m.schema.safeParse(params ?? {});
    if (!parsed.success) {
      const e = invalidParams(name, parsed.error);
      return fail(id, RpcCode.InvalidParams, e.message, { code: e.code, details: e.details });
    }
    const ac = new AbortController();
    conn.running.set(id, ac);
    const started = Date.now();
    const log = this.log.child({ method: name, rpcId: typeof id === 'string' ? clip(id) : id });
    log.debug('rpc start');
    let take: ((sock: Socket) => void) | undefined;
    try {
      const result = await runOp({ method: name, id }, () =>
        m.handler(parsed.data, {
          signal: ac.signal,
          progress: (event: ProgressEvent) =>
            conn.send({ jsonrpc: '2.0', method: '$/progress', params: { id, event: { elapsedMs: Date.now() - started, ...event } } }),
          upgrade: conn.upgrade ? (t) => void (take = t) : undefined,
        }),
      );
      conn.send({ jsonrpc: '2.0', id, result: result ?? null });
      if (take) conn.upgrade!(take);
      log.info('rpc ok', { ms: Date.now() - started });
    } catch (e) {
      const err = ac.signal.aborted && !(e instanceof BangerError) ? new BangerError(ErrorCode.Cancelled, 'operation cancelled', { cause: e }) : e;
      log.warn('rpc failed', {
        ms: Date.now() - started,
        error: describe(err),
        code: err instanceof BangerError ? err.code : undefined,
        stack: err instanceof BangerError ? undefined : (err as Error)?.stack,
      });
      conn.send({ jsonrpc: '2.0', id, error: safeRpcError(err) });
    } finally {
      conn.running.delete(id);
    }
  }
}

function describe(e: unknown): string {
  try {
    return e instanceof Error ? e.message : String(e);
  } catch {
    return '(unprintable error)';
  }
}

function safeRpcError(e: unknown): ReturnType<typeof toRpcError> {
  try {
    return toRpcError(e);
  } catch {
    return toRpcError(new Error(describe(e)));
  }
}
