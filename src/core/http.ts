import { Agent, request, type Dispatcher } from 'undici';
import type { Readable } from 'node:stream';
import { BangerError, ErrorCode, errorMessage } from './errors.js';

/**
 * The one HTTP client of banger: every download (registry manifests and blobs, kernel bundles,
 * remote kernel catalogs, the Debian archive) goes through `HttpClient.open`.
 *
 * Contract, per logical request:
 * - connect, response-headers and idle-body timeouts (undici Agent options), and an overall
 *   deadline (`deadline: 'document' | 'download'`) that covers retries, redirects and reading
 *   the body; past it the request is aborted and the error is E_TIMEOUT naming what was awaited;
 * - response headers larger than `maxHeaderBytes` and bodies larger than `maxBytes` fail (E_HTTP);
 * - redirects followed by hand (at most `maxRedirects`), never https → http, Authorization
 *   dropped on a cross-origin hop;
 * - retries only for temporary failures: connection refused/reset before a response, HTTP
 *   502/503/504, and 429 whose Retry-After is within `maxRetryAfterMs`;
 * - the body is read eagerly into a bounded queue (undici 7's parser must not sit paused when
 *   the peer closes, nodejs/undici#5360); whenever the consumer stops early or throws, the
 *   request is aborted and the socket destroyed (`close()`), so no parser is left paused.
 * Errors are BangerError: E_HTTP, E_TIMEOUT or E_CANCELLED (the caller's signal). An E_HTTP
 * whose `details.cut` is true is a connection cut mid-response (a Range resume may help).
 */

export interface HttpLimits {
  connectTimeoutMs: number;
  headersTimeoutMs: number;
  /** No body byte for this long: E_TIMEOUT. */
  idleTimeoutMs: number;
  /** Overall deadline of a small document (manifest, catalog, InRelease, token). */
  documentDeadlineMs: number;
  /** Overall deadline of a large download (layer, kernel bundle, .deb). */
  downloadDeadlineMs: number;
  maxHeaderBytes: number;
  maxRedirects: number;
  attempts: number;
  backoffMs: number;
  maxRetryAfterMs: number;
}

export const DEFAULT_LIMITS: HttpLimits = {
  connectTimeoutMs: 15_000,
  headersTimeoutMs: 30_000,
  idleTimeoutMs: 30_000,
  documentDeadlineMs: 120_000,
  downloadDeadlineMs: 3_600_000,
  maxHeaderBytes: 64 * 1024,
  maxRedirects: 5,
  attempts: 4,
  backoffMs: 200,
  maxRetryAfterMs: 10_000,
};

/** Config keys (`http.*`, seconds) → limits. */
export function limitsFromConfig(
  http?: Partial<
    Record<'connectTimeoutSeconds' | 'headersTimeoutSeconds' | 'idleTimeoutSeconds' | 'documentDeadlineSeconds' | 'downloadDeadlineSeconds', number>
  >,
): Partial<HttpLimits> {
  const ms = (s?: number) => (s === undefined ? undefined : Math.round(s * 1000));
  const out: Partial<HttpLimits> = {
    connectTimeoutMs: ms(http?.connectTimeoutSeconds),
    headersTimeoutMs: ms(http?.headersTimeoutSeconds),
    idleTimeoutMs: ms(http?.idleTimeoutSeconds),
    documentDeadlineMs: ms(http?.documentDeadlineSeconds),
    downloadDeadlineMs: ms(http?.downloadDeadlineSeconds),
  };
  for (const k of Object.keys(out) as (keyof HttpLimits)[]) if (out[k] === undefined) delete out[k];
  return out;
}

export interface OpenOptions {
  /** Label for errors and progress, e.g. "kernel catalog https://…" or "blob sha256:…". */
  what: string;
  method?: 'GET' | 'HEAD';
  headers?: Record<string, string>;
  signal?: AbortSignal;
  deadline?: 'document' | 'download';
  /** Refuse bodies larger than this (Content-Length up front, counted bytes while reading). */
  maxBytes?: number;
  /** Error code of a body over `maxBytes` (default E_HTTP; the registry uses E_REGISTRY). */
  tooLargeCode?: string;
  /** What is being waited for, as it changes ("waiting for response headers", "retrying in 2 s"). */
  onWait?: (message: string) => void;
  /** Override attempts (1 = no retry). */
  attempts?: number;
}

const RETRY_CODES = new Set(['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'EAI_AGAIN', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED']);
const RETRY_STATUS = new Set([502, 503, 504]);
/** Body bytes held in memory before backpressure reaches undici (see the header comment). */
const QUEUE_HIGH = 32 * 1024 * 1024;

function errCode(e: unknown): string {
  const x = e as { code?: string; cause?: { code?: string } };
  return x?.code ?? x?.cause?.code ?? '';
}

/** URLs of blob storage can carry signatures in the query: never print them. */
export function redact(url: string): string {
  const i = url.indexOf('?');
  return i < 0 ? url : url.slice(0, i) + '?…';
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason ?? new BangerError(ErrorCode.Cancelled, 'operation cancelled'));
    const onAbort = () => {
      clearTimeout(t);
      reject(signal!.reason ?? new BangerError(ErrorCode.Cancelled, 'operation cancelled'));
    };
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

export class HttpClient {
  readonly limits: HttpLimits;
  private agent?: Agent;

  constructor(limits: Partial<HttpLimits> = {}) {
    this.limits = { ...DEFAULT_LIMITS, ...limits };
  }

  private dispatcher(): Dispatcher {
    // HTTP/1.1 only (undici 8 would negotiate HTTP/2 over TLS): one connection per parallel download.
    this.agent ??= new Agent({
      allowH2: false,
      connections: 8,
      keepAliveTimeout: 10_000,
      connect: { timeout: this.limits.connectTimeoutMs },
      headersTimeout: this.limits.headersTimeoutMs,
      bodyTimeout: this.limits.idleTimeoutMs,
      maxHeaderSize: this.limits.maxHeaderBytes,
    });
    return this.agent;
  }

  async close(): Promise<void> {
    await this.agent?.close().catch(() => {});
  }

  /**
   * One logical request (redirects + retries) under one deadline. The caller must read the
   * body (`chunks()` / `readAll()`) or `close()` the response; both end the deadline timer.
   */
  async open(url: string, opts: OpenOptions): Promise<HttpResponse> {
    const L = this.limits;
    const deadlineMs = opts.deadline === 'download' ? L.downloadDeadlineMs : L.documentDeadlineMs;
    const ac = new AbortController();
    const state = { waiting: 'connecting', timedOut: false };
    const onCallerAbort = () => ac.abort(new BangerError(ErrorCode.Cancelled, `${opts.what}: cancelled`));
    if (opts.signal?.aborted) onCallerAbort();
    opts.signal?.addEventListener('abort', onCallerAbort, { once: true });
    const timer = setTimeout(() => {
      state.timedOut = true;
      ac.abort(
        new BangerError(
          ErrorCode.Timeout,
          `${opts.what}: GET ${redact(url)}: no complete answer within the ${fmtSec(deadlineMs)} deadline (was ${state.waiting})`,
          {
            hint: 'the server is too slow or not answering; try again later, or raise http.documentDeadlineSeconds / http.downloadDeadlineSeconds in the config',
            details: { url: redact(url), deadlineMs, waiting: state.waiting },
          },
        ),
      );
    }, deadlineMs);
    let slow: NodeJS.Timeout | undefined;
    const release = () => {
      clearTimeout(timer);
      clearTimeout(slow);
      opts.signal?.removeEventListener('abort', onCallerAbort);
    };
    // Progress says what is awaited only when it takes a while (>1 s) or is a retry: no flood.
    const wait = (m: string, now = false) => {
      state.waiting = m;
      clearTimeout(slow);
      if (!opts.onWait) return;
      if (now) opts.onWait(`${opts.what}: ${m}`);
      else {
        slow = setTimeout(() => state.waiting === m && opts.onWait?.(`${opts.what}: ${m}`), 1000);
        slow.unref();
      }
    };
    const fail = (e: unknown, where: string): BangerError => {
      release();
      return this.mapError(e, opts, url, where, ac.signal, state.timedOut);
    };
    const attempts = opts.attempts ?? L.attempts;
    for (let attempt = 1; ; attempt++) {
      let res: { status: number; headers: Dispatcher.ResponseData['headers']; body: Dispatcher.ResponseData['body']; url: string };
      try {
        res = await this.followRedirects(url, opts, ac.signal, wait);
      } catch (e) {
        const code = errCode(e);
        if (!(e instanceof BangerError) && !ac.signal.aborted && RETRY_CODES.has(code) && attempt < attempts) {
          const ms = L.backoffMs * 2 ** (attempt - 1);
          wait(`retrying in ${fmtSec(ms)} after ${code}`, true);
          try {
            await sleep(ms, ac.signal);
          } catch (se) {
            throw fail(se, state.waiting);
          }
          continue;
        }
        throw fail(e, state.waiting);
      }
      if ((RETRY_STATUS.has(res.status) || res.status === 429) && attempt < attempts) {
        let ms = L.backoffMs * 2 ** (attempt - 1);
        const ra = headerOf(res.headers, 'retry-after');
        if (ra !== undefined) {
          const s = /^\d+$/.test(ra) ? Number(ra) * 1000 : Date.parse(ra) - Date.now();
          if (Number.isFinite(s)) ms = Math.max(0, s);
        }
        if (ms <= L.maxRetryAfterMs) {
          destroyBody(res.body);
          wait(`retrying in ${fmtSec(ms)} after HTTP ${res.status}`, true);
          try {
            await sleep(ms, ac.signal);
          } catch (se) {
            throw fail(se, state.waiting);
          }
          continue;
        }
      }
      const len = headerOf(res.headers, 'content-length');
      const contentLength = len !== undefined && /^\d+$/.test(len) ? Number(len) : undefined;
      if (opts.maxBytes !== undefined && contentLength !== undefined && contentLength > opts.maxBytes && res.status < 300) {
        destroyBody(res.body);
        ac.abort();
        release();
        throw new BangerError(
          opts.tooLargeCode ?? ErrorCode.Http,
          `${opts.what}: ${redact(res.url)} is ${contentLength} bytes, more than the ${opts.maxBytes}-byte limit`,
          { details: { url: redact(res.url), size: contentLength, limit: opts.maxBytes } },
        );
      }
      wait('receiving the body');
      return new HttpResponse(res.status, res.headers, res.body, res.url, contentLength, opts, ac, release, (e) => fail(e, state.waiting));
    }
  }

  private async followRedirects(url: string, opts: OpenOptions, signal: AbortSignal, wait: (m: string) => void) {
    let current = new URL(url);
    let headers = { ...opts.headers };
    const origin = current.origin;
    for (let hop = 0; hop <= this.limits.maxRedirects; hop++) {
      wait(`waiting for response headers from ${current.host}`);
      const res = await request(current, { method: opts.method ?? 'GET', headers, signal, dispatcher: this.dispatcher(), highWaterMark: 1024 * 1024 });
      if (res.statusCode >= 300 && res.statusCode < 400 && res.statusCode !== 304) {
        const loc = headerOf(res.headers, 'location');
        destroyBody(res.body);
        if (!loc) throw new BangerError(ErrorCode.Http, `${opts.what}: ${redact(current.href)}: redirect ${res.statusCode} without Location`);
        const next = new URL(loc, current);
        if (next.protocol !== 'https:' && next.protocol !== 'http:')
          throw new BangerError(ErrorCode.Http, `${opts.what}: ${redact(current.href)}: redirect to unsupported scheme ${next.protocol}`);
        if (current.protocol === 'https:' && next.protocol === 'http:')
          throw new BangerError(ErrorCode.Http, `${opts.what}: ${redact(current.href)}: refusing redirect from https to plain http (${redact(next.href)})`);
        if (next.origin !== origin) {
          const { authorization: _a, Authorization: _b, ...rest } = headers;
          headers = rest;
        }
        current = next;
        continue;
      }
      return { status: res.statusCode, headers: res.headers, body: res.body, url: current.href };
    }
    throw new BangerError(ErrorCode.Http, `${opts.what}: ${redact(url)}: more than ${this.limits.maxRedirects} redirects`);
  }

  /** Turn whatever undici (or a consumer) threw into a BangerError naming the request. */
  mapError(e: unknown, opts: OpenOptions, url: string, where: string, signal: AbortSignal, timedOut: boolean): BangerError {
    if (timedOut && signal.reason instanceof BangerError) return signal.reason;
    if (opts.signal?.aborted)
      return e instanceof BangerError && e.code === ErrorCode.Cancelled ? e : new BangerError(ErrorCode.Cancelled, `${opts.what}: cancelled`, { cause: e });
    if (e instanceof BangerError) return e;
    const L = this.limits;
    const code = errCode(e);
    const u = redact(url);
    const details = { url: u, code, waiting: where };
    const hint = 'check that the server is reachable and healthy, then try again';
    switch (code) {
      case 'UND_ERR_CONNECT_TIMEOUT':
        return new BangerError(ErrorCode.Timeout, `${opts.what}: GET ${u}: could not connect within ${fmtSec(L.connectTimeoutMs)}`, {
          hint,
          cause: e,
          details,
        });
      case 'UND_ERR_HEADERS_TIMEOUT':
        return new BangerError(ErrorCode.Timeout, `${opts.what}: GET ${u}: no response headers within ${fmtSec(L.headersTimeoutMs)}`, {
          hint,
          cause: e,
          details,
        });
      case 'UND_ERR_BODY_TIMEOUT':
        return new BangerError(ErrorCode.Timeout, `${opts.what}: GET ${u}: no data received for ${fmtSec(L.idleTimeoutMs)} (${where})`, {
          hint,
          cause: e,
          details,
        });
      case 'UND_ERR_HEADERS_OVERFLOW':
        return new BangerError(ErrorCode.Http, `${opts.what}: GET ${u}: response headers larger than ${L.maxHeaderBytes} bytes`, {
          hint: 'the server is misbehaving',
          cause: e,
          details,
        });
      case 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH':
        return new BangerError(ErrorCode.Http, `${opts.what}: GET ${u}: body truncated (it does not match its Content-Length)`, {
          hint: 'the connection was cut or the server is misbehaving; try again',
          cause: e,
          details: { ...details, cut: true },
        });
    }
    const cut = code === 'UND_ERR_SOCKET' || code === 'ECONNRESET' || code === 'EPIPE' || code.startsWith('HPE_') || !code;
    return new BangerError(
      ErrorCode.Http,
      `${opts.what}: GET ${u}: ${cut ? (where === 'receiving the body' ? 'connection cut, body truncated' : 'connection failed') : 'failed'} (${where}): ${errorMessage(e)}${code ? ` (${code})` : ''}`,
      { hint, cause: e, details: { ...details, cut } },
    );
  }
}

/**
 * A response whose body is owned by the caller: read it with `chunks()` / `readAll()`, or
 * `close()` it. Leaving the loop early, a throw in the loop, or `close()` aborts the request.
 */
export class HttpResponse {
  /** Body bytes delivered so far. */
  received = 0;
  private done = false;
  private readonly queue: Buffer[] = [];
  private queued = 0;
  private ended = false;
  private error: unknown;
  private wake?: () => void;

  constructor(
    readonly status: number,
    readonly headers: Dispatcher.ResponseData['headers'],
    private readonly body: Readable,
    readonly url: string,
    readonly contentLength: number | undefined,
    private readonly opts: OpenOptions,
    private readonly ac: AbortController,
    private readonly release: () => void,
    private readonly fail: (e: unknown) => BangerError,
  ) {
    // Flow at once, before the caller reads: a body left paused is what undici 7 cannot survive.
    body.on('data', (c: Buffer) => {
      this.queue.push(c);
      this.queued += c.length;
      if (this.queued > QUEUE_HIGH) body.pause();
      this.poke();
    });
    body.on('end', () => {
      this.ended = true;
      this.poke();
    });
    body.on('error', (e) => {
      this.error ??= e;
      this.poke();
    });
    body.on('close', () => {
      if (!this.ended) this.error ??= new Error('response body closed early');
      this.poke();
    });
  }

  private poke(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  header(name: string): string | undefined {
    return headerOf(this.headers, name);
  }

  /** Abort the request unless its body was read to the end; idempotent. */
  close(): void {
    if (this.done) return;
    this.done = true;
    this.release();
    this.queue.length = 0;
    if (!this.ended) {
      this.ac.abort();
      destroyBody(this.body);
    }
  }

  /** The body, chunk by chunk (from the bounded queue; see the module comment). */
  async *chunks(): AsyncGenerator<Buffer> {
    try {
      for (;;) {
        const c = this.queue.shift();
        if (c) {
          this.queued -= c.length;
          if (this.body.isPaused() && this.queued < QUEUE_HIGH / 2) this.body.resume();
          this.received += c.length;
          if (this.opts.maxBytes !== undefined && this.received > this.opts.maxBytes) {
            throw new BangerError(
              this.opts.tooLargeCode ?? ErrorCode.Http,
              `${this.opts.what}: ${redact(this.url)} is more than the ${this.opts.maxBytes}-byte limit`,
              { details: { url: redact(this.url), limit: this.opts.maxBytes } },
            );
          }
          yield c;
          continue;
        }
        if (this.error !== undefined) throw this.fail(this.error);
        if (this.ended) {
          if (this.contentLength !== undefined && this.received !== this.contentLength) {
            throw new BangerError(
              ErrorCode.Http,
              `${this.opts.what}: ${redact(this.url)}: body truncated: received ${this.received} of ${this.contentLength} bytes`,
              {
                hint: 'the connection was cut; try again',
                details: { url: redact(this.url), received: this.received, expected: this.contentLength, cut: true },
              },
            );
          }
          this.done = true;
          this.release();
          return;
        }
        if (this.done) throw this.fail(new Error('response closed'));
        await new Promise<void>((r) => (this.wake = r));
      }
    } finally {
      this.close();
    }
  }

  /** The whole body (at most `opts.maxBytes`). */
  async readAll(): Promise<Buffer> {
    const parts: Buffer[] = [];
    for await (const c of this.chunks()) parts.push(c);
    return Buffer.concat(parts);
  }
}

export function headerOf(headers: Dispatcher.ResponseData['headers'], name: string): string | undefined {
  const v = headers[name.toLowerCase()];
  return Array.isArray(v) ? v[0] : v;
}

function destroyBody(body: Readable): void {
  body.on('error', () => {});
  body.destroy();
}

function fmtSec(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${(ms / 1000).toFixed(1)} s`;
}

/** A client with default limits, for code paths that have no config at hand (CLI-side catalog checks). */
let shared: HttpClient | undefined;
export function defaultHttp(): HttpClient {
  shared ??= new HttpClient();
  return shared;
}

const perConfig = new WeakMap<object, HttpClient>();
/** The client for a loaded config (`http.*` limits), one per config object (shared connection pool). */
export function httpFor(config: { http?: Parameters<typeof limitsFromConfig>[0] }): HttpClient {
  let c = perConfig.get(config);
  if (!c) {
    c = new HttpClient(limitsFromConfig(config.http));
    perConfig.set(config, c);
  }
  return c;
}
