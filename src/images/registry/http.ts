import { Agent, request, type Dispatcher } from 'undici';
import { BangerError, ErrorCode } from '../../core/errors.js';

/**
 * HTTP for the registry client: undici requests with
 * - redirects followed by hand (max 5), dropping Authorization on a cross-origin hop
 *   (blob storage redirects must never see registry credentials);
 * - retry with exponential backoff on 429, 5xx and dropped/refused connections
 *   (Retry-After honoured up to 10 s).
 * Returns the final response; the caller owns (and must consume or destroy) its body.
 */
export interface HttpResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Dispatcher.ResponseData['body'];
  url: string;
}

export interface HttpOptions {
  method?: 'GET' | 'HEAD';
  headers?: Record<string, string>;
  signal?: AbortSignal;
  /** Attempts in total (default 4). */
  attempts?: number;
  /** Base backoff in ms (default 200). */
  backoffMs?: number;
}

// HTTP/1.1 only (undici 8 negotiates HTTP/2 by default): parallel layer downloads use separate
// connections, as they did with undici 7 and as our tests exercise.
export const agent = new Agent({ allowH2: false, connections: 8, keepAliveTimeout: 10_000, connect: { timeout: 15_000 }, headersTimeout: 60_000, bodyTimeout: 60_000 });

const RETRY_CODES = new Set(['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'UND_ERR_SOCKET', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CLOSED', 'EAI_AGAIN']);

export function isRetryableError(e: unknown): boolean {
  const err = e as { code?: string; cause?: { code?: string } };
  return RETRY_CODES.has(err?.code ?? '') || RETRY_CODES.has(err?.cause?.code ?? '');
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new BangerError(ErrorCode.Cancelled, 'operation cancelled'));
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(new BangerError(ErrorCode.Cancelled, 'operation cancelled'));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

export function header(res: { headers: HttpResponse['headers'] }, name: string): string | undefined {
  const v = res.headers[name.toLowerCase()];
  return Array.isArray(v) ? v[0] : v;
}

/** One logical request: redirects + retries. Throws E_HTTP after the last attempt. */
export async function httpRequest(url: string, opts: HttpOptions = {}): Promise<HttpResponse> {
  const attempts = opts.attempts ?? 4;
  const base = opts.backoffMs ?? 200;
  let lastErr: unknown;
  for (let attempt = 1; attempt <= attempts; attempt++) {
    if (opts.signal?.aborted) throw new BangerError(ErrorCode.Cancelled, 'operation cancelled');
    let wait = base * 2 ** (attempt - 1);
    try {
      const res = await followRedirects(url, opts);
      if ((res.status === 429 || res.status >= 500) && attempt < attempts) {
        const ra = Number(header(res, 'retry-after'));
        if (Number.isFinite(ra) && ra > 0) wait = Math.min(ra * 1000, 10_000);
        discard(res);
        lastErr = new BangerError(ErrorCode.Http, `GET ${redact(url)}: HTTP ${res.status}`);
        await sleep(wait, opts.signal);
        continue;
      }
      return res;
    } catch (e) {
      if (opts.signal?.aborted) throw new BangerError(ErrorCode.Cancelled, 'operation cancelled', { cause: e });
      if (e instanceof BangerError || !isRetryableError(e) || attempt === attempts) {
        if (e instanceof BangerError) throw e;
        throw new BangerError(ErrorCode.Http, `${opts.method ?? 'GET'} ${redact(url)}: ${(e as Error).message}${(e as { code?: string }).code ? ` (${(e as { code?: string }).code})` : ''}`, {
          hint: 'check that the registry is reachable (banger retried with backoff)',
          cause: e,
        });
      }
      lastErr = e;
      await sleep(wait, opts.signal);
    }
  }
  throw lastErr;
}

async function followRedirects(url: string, opts: HttpOptions): Promise<HttpResponse> {
  let current = new URL(url);
  let headers = { ...opts.headers };
  const origin = current.origin;
  for (let hop = 0; hop <= 5; hop++) {
    const res = await request(current, { method: opts.method ?? 'GET', headers, signal: opts.signal, dispatcher: agent, highWaterMark: 4 * 1024 * 1024 });
    if (res.statusCode >= 300 && res.statusCode < 400 && res.statusCode !== 304) {
      const loc = header(res, 'location');
      discard(res);
      if (!loc) throw new BangerError(ErrorCode.Http, `${redact(current.href)}: redirect ${res.statusCode} without Location`);
      const next = new URL(loc, current);
      if (next.protocol !== 'https:' && next.protocol !== 'http:') throw new BangerError(ErrorCode.Http, `${redact(current.href)}: redirect to unsupported scheme ${next.protocol}`);
      if (current.protocol === 'https:' && next.protocol === 'http:') throw new BangerError(ErrorCode.Http, `${redact(current.href)}: refusing redirect from https to plain http (${redact(next.href)})`);
      if (next.origin !== origin) {
        const { authorization: _a, Authorization: _b, ...rest } = headers;
        headers = rest;
      }
      current = next;
      continue;
    }
    return { status: res.statusCode, headers: res.headers, body: res.body, url: current.href };
  }
  throw new BangerError(ErrorCode.Http, `${redact(url)}: too many redirects`);
}

/** URLs of blob storage can carry signatures in the query: never print them. */
export function redact(url: string): string {
  const i = url.indexOf('?');
  return i < 0 ? url : url.slice(0, i) + '?…';
}

/** Read a body up to `limit` bytes; throws E_REGISTRY naming `what` when larger. */
export async function readLimited(res: HttpResponse, limit: number, what: string): Promise<Buffer> {
  const len = Number(header(res, 'content-length'));
  if (Number.isFinite(len) && len > limit) {
    discard(res);
    throw new BangerError(ErrorCode.Registry, `${what} is ${len} bytes, more than the ${limit}-byte limit`, { hint: 'this does not look like an image manifest; check the reference' });
  }
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of res.body) {
    n += (c as Buffer).length;
    if (n > limit) {
      discard(res);
      throw new BangerError(ErrorCode.Registry, `${what} is more than the ${limit}-byte limit`, { hint: 'this does not look like an image manifest; check the reference' });
    }
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks);
}

/** Drop a response body we do not need (without an unhandled 'error' from the abort). */
export function discard(res: { body: HttpResponse['body'] }): void {
  res.body.on('error', () => {});
  res.body.destroy();
}
