import { createHash } from 'node:crypto';
import { BangerError, ErrorCode } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import { apiHost, type ImageReference } from '../reference.js';
import { parseChallenge, type Challenge, type CredentialStore, type Credentials } from './auth.js';
import { defaultHttp, redact, sleep, type HttpClient, type HttpResponse, type OpenOptions } from '../../core/http.js';
import { verifyBlob } from '../../core/content-store.js';
import { MANIFEST_ACCEPT, type Descriptor } from './manifest.js';

/** Manifests larger than this are refused (the distribution spec suggests 4 MiB). */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

export interface RegistryOptions {
  creds: Pick<CredentialStore, 'get'>;
  log: Logger;
  insecureRegistries: string[];
  /** Mirror base URLs keyed by registry name, tried before the origin. */
  mirrors: Record<string, string[]>;
  signal?: AbortSignal;
  /** The HTTP client (deadlines, size caps, retries); default limits when absent. */
  http?: HttpClient;
  /** What is being waited for (progress). */
  onWait?: (message: string) => void;
}

interface Endpoint {
  base: string;
  host: string;
  mirror: boolean;
  pinged?: Promise<Challenge | null>;
  token?: string;
  creds?: Credentials | null;
}

export interface FetchedManifest {
  body: Buffer;
  digest: string;
  contentType?: string;
}

/** Plain HTTP only for loopback hosts or registries the config marks insecure. */
export function useHttp(host: string, insecure: string[]): boolean {
  const h = host.replace(/:\d+$/, '');
  return h === 'localhost' || h === '127.0.0.1' || h === '[::1]' || insecure.includes(host) || insecure.includes(h);
}

export function sha256(buf: Buffer): string {
  return 'sha256:' + createHash('sha256').update(buf).digest('hex');
}

/**
 * A client for one repository on one registry (OCI distribution spec): /v2/ ping, Bearer
 * token flow (anonymous or with credentials) and Basic auth, mirrors first, every manifest
 * verified against its digest. Blob bodies are streamed by `blobChunks`, which resumes a
 * dropped connection with a Range request; the caller verifies the blob digest.
 */
export class RegistryClient {
  private readonly endpoints: Endpoint[];

  constructor(
    readonly ref: ImageReference,
    private readonly opts: RegistryOptions,
  ) {
    const host = apiHost(ref.registry);
    const origin: Endpoint = { base: `${useHttp(host, opts.insecureRegistries) ? 'http' : 'https'}://${host}`, host: ref.registry, mirror: false };
    const mirrors = (opts.mirrors[ref.registry] ?? []).map((m) => {
      const u = new URL(m);
      return { base: m.replace(/\/+$/, ''), host: u.host, mirror: true } as Endpoint;
    });
    this.endpoints = [...mirrors, origin];
  }

  private req(url: string, what: string, extra: Partial<OpenOptions> = {}): Promise<HttpResponse> {
    return (this.opts.http ?? defaultHttp()).open(url, { what, signal: this.opts.signal, onWait: this.opts.onWait, maxBytes: 1024 * 1024, ...extra });
  }

  private what(ep: Endpoint): string {
    return ep.mirror ? `mirror ${ep.base}` : `registry ${this.ref.registry}`;
  }

  private async ping(ep: Endpoint): Promise<Challenge | null> {
    ep.pinged ??= (async () => {
      const res = await this.req(`${ep.base}/v2/`, this.what(ep));
      res.close();
      if (res.status === 200) return null;
      if (res.status === 401) {
        const ch = parseChallenge(res.header('www-authenticate'));
        if (!ch) throw new BangerError(ErrorCode.Registry, `${this.what(ep)}: /v2/ answered 401 without a usable WWW-Authenticate challenge`);
        return ch;
      }
      throw new BangerError(ErrorCode.Registry, `${this.what(ep)}: /v2/ answered HTTP ${res.status}; this does not look like an OCI registry`, {
        hint: `check the registry host in '${this.ref.canonical}'`,
      });
    })();
    try {
      return await ep.pinged;
    } catch (e) {
      ep.pinged = undefined;
      throw e;
    }
  }

  private async credentials(ep: Endpoint): Promise<Credentials | undefined> {
    if (ep.creds === undefined) ep.creds = (await this.opts.creds.get(ep.mirror ? ep.host : this.ref.registry)) ?? null;
    return ep.creds ?? undefined;
  }

  private async fetchToken(ep: Endpoint, ch: Challenge, withScope = true): Promise<string> {
    const realm = ch.params.realm;
    if (!realm) throw new BangerError(ErrorCode.Auth, `${this.what(ep)}: Bearer challenge without a realm`);
    const url = new URL(realm);
    if (ch.params.service) url.searchParams.set('service', ch.params.service);
    if (withScope)
      url.searchParams.set(
        'scope',
        ch.params.scope && ch.params.scope.includes(this.ref.repository) ? ch.params.scope : `repository:${this.ref.repository}:pull`,
      );
    const creds = await this.credentials(ep);
    const headers: Record<string, string> = {};
    if (creds) headers.authorization = 'Basic ' + Buffer.from(`${creds.username}:${creds.password}`).toString('base64');
    const res = await this.req(url.href, `token server ${url.origin}`, { headers });
    if (res.status === 401 || res.status === 403) {
      res.close();
      throw new BangerError(
        ErrorCode.Auth,
        `${this.what(ep)}: token server ${url.origin} refused ${creds ? `the credentials of '${creds.username}' (from ${creds.source})` : 'anonymous access'} (HTTP ${res.status})`,
        {
          hint: creds
            ? `check the password; run 'banger registry login ${this.ref.registry} -u USER --password-stdin' again`
            : `run 'banger registry login ${this.ref.registry} -u USER --password-stdin'`,
        },
      );
    }
    if (res.status !== 200) {
      res.close();
      throw new BangerError(ErrorCode.Auth, `${this.what(ep)}: token server ${url.origin} answered HTTP ${res.status}`);
    }
    const body = await res.readAll();
    let j: { token?: string; access_token?: string };
    try {
      j = JSON.parse(body.toString('utf8'));
    } catch (e) {
      throw new BangerError(ErrorCode.Auth, `${this.what(ep)}: token server returned invalid JSON`, { cause: e });
    }
    const t = j.token ?? j.access_token;
    if (!t) throw new BangerError(ErrorCode.Auth, `${this.what(ep)}: token server returned no token`);
    return t;
  }

  private async authHeader(ep: Endpoint, ch: Challenge | null, refresh = false): Promise<string | undefined> {
    if (!ch) return undefined;
    if (ch.scheme === 'basic') {
      const c = await this.credentials(ep);
      if (!c)
        throw new BangerError(ErrorCode.Auth, `${this.what(ep)} requires a login (Basic auth)`, {
          hint: `run 'banger registry login ${this.ref.registry} -u USER --password-stdin'`,
        });
      return 'Basic ' + Buffer.from(`${c.username}:${c.password}`).toString('base64');
    }
    if (!ep.token || refresh) ep.token = await this.fetchToken(ep, ch);
    return `Bearer ${ep.token}`;
  }

  /** GET `path` on `ep` with auth; one token refresh on 401. Returns any final status. */
  private async get(ep: Endpoint, path: string, headers: Record<string, string>, extra: Partial<OpenOptions> = {}): Promise<HttpResponse> {
    const ch = await this.ping(ep);
    let auth = await this.authHeader(ep, ch);
    for (let i = 0; ; i++) {
      const res = await this.req(`${ep.base}${path}`, extra.what ?? `${this.what(ep)} ${path}`, {
        ...extra,
        headers: auth ? { ...headers, authorization: auth } : headers,
      });
      if (res.status !== 401) return res;
      res.close();
      const again = parseChallenge(res.header('www-authenticate')) ?? ch;
      if (i === 0 && again?.scheme === 'bearer') {
        auth = await this.authHeader(ep, again, true);
        continue;
      }
      const c = await this.credentials(ep);
      throw new BangerError(
        ErrorCode.Auth,
        `${this.what(ep)}: authentication failed for ${this.ref.repository}${c ? ` with the credentials of '${c.username}' (from ${c.source})` : ' (no credentials)'}`,
        {
          hint: `run 'banger registry login ${this.ref.registry} -u USER --password-stdin'`,
        },
      );
    }
  }

  /** Try each endpoint (mirrors first); the origin's error wins when all fail. */
  private async firstOk<T>(fn: (ep: Endpoint) => Promise<T>): Promise<T> {
    let last: unknown;
    for (const ep of this.endpoints) {
      try {
        return await fn(ep);
      } catch (e) {
        if (this.opts.signal?.aborted) throw e;
        last = e;
        if (ep.mirror) this.opts.log.warn('registry mirror failed; trying the next endpoint', { mirror: ep.base, error: (e as Error).message });
      }
    }
    throw last;
  }

  /** Fetch and verify a manifest by tag or digest. */
  async manifest(reference: string): Promise<FetchedManifest> {
    return this.firstOk(async (ep) => {
      const what = `${this.ref.registry}/${this.ref.repository}:${reference}`.replace(':sha256:', '@sha256:');
      const res = await this.get(
        ep,
        `/v2/${this.ref.repository}/manifests/${reference}`,
        { accept: MANIFEST_ACCEPT },
        { what: `manifest ${what}`, maxBytes: MAX_MANIFEST_BYTES, tooLargeCode: ErrorCode.Registry },
      );
      if (res.status === 404) {
        res.close();
        throw new BangerError(ErrorCode.NotFound, `manifest ${what} not found on ${this.what(ep)}`, { hint: 'check the repository name and tag' });
      }
      if (res.status !== 200) {
        res.close();
        throw new BangerError(ErrorCode.Registry, `manifest ${what}: ${this.what(ep)} answered HTTP ${res.status}`);
      }
      const body = await res.readAll();
      const digest = sha256(body);
      const expected = reference.startsWith('sha256:') ? reference : res.header('docker-content-digest');
      if (expected && expected !== digest) {
        throw new BangerError(ErrorCode.Digest, `manifest ${what}: digest mismatch: expected ${expected}, got ${digest}`, {
          hint: 'the registry (or something between) served different content; nothing was kept',
        });
      }
      return { body, digest, contentType: res.header('content-type') };
    });
  }

  /** Fetch a small blob (an image config) fully and verify it. */
  async smallBlob(desc: Descriptor, limit = MAX_MANIFEST_BYTES): Promise<Buffer> {
    if (desc.size > limit)
      throw new BangerError(ErrorCode.Registry, `blob ${desc.digest} is ${desc.size} bytes, more than the ${limit}-byte limit for a config`);
    const chunks: Buffer[] = [];
    for await (const c of this.blobChunks(desc, 'document')) chunks.push(c);
    const buf = Buffer.concat(chunks);
    verifyBlob(desc, buf.length, sha256(buf));
    return buf;
  }

  /**
   * The raw bytes of a blob, resuming dropped connections with `Range` (up to 5 times).
   * Stops with E_DIGEST when the registry sends more than the descriptor's size; the
   * caller hashes the bytes and calls `verifyBlob` (a short blob is reported there).
   */
  async *blobChunks(desc: Descriptor, deadline: 'document' | 'download' = 'download'): AsyncGenerator<Buffer> {
    let offset = 0;
    let resumes = 0;
    const ep = await this.firstOk(async (e) => {
      await this.ping(e);
      return e;
    });
    const what = `blob ${desc.digest}`;
    for (;;) {
      const res = await this.get(ep, `/v2/${this.ref.repository}/blobs/${desc.digest}`, offset ? { range: `bytes=${offset}-` } : {}, {
        what,
        deadline,
        maxBytes: desc.size + 1,
      });
      if (res.status === 404) {
        res.close();
        throw new BangerError(ErrorCode.NotFound, `blob ${desc.digest} not found on ${this.what(ep)} (repository ${this.ref.repository})`);
      }
      if (res.status !== 200 && res.status !== 206) {
        res.close();
        throw new BangerError(ErrorCode.Registry, `blob ${desc.digest}: ${this.what(ep)} answered HTTP ${res.status} (${redact(res.url)})`);
      }
      let skip = offset > 0 && res.status === 200 ? offset : 0; // server ignored Range
      try {
        for await (let c of res.chunks()) {
          if (skip) {
            if (c.length <= skip) {
              skip -= c.length;
              continue;
            }
            c = c.subarray(skip);
            skip = 0;
          }
          offset += c.length;
          if (offset > desc.size) throw new BangerError(ErrorCode.Digest, `blob ${desc.digest} is larger than the ${desc.size} bytes its descriptor says`);
          yield c;
        }
        return;
      } catch (e) {
        res.close();
        // Only a cut connection is resumed (Range); timeouts, caps and cancellation are final.
        const cut = e instanceof BangerError && e.code === ErrorCode.Http && e.details?.['cut'] === true;
        if (!cut || ++resumes > 5 || this.opts.signal?.aborted) throw e;
        this.opts.log.warn('blob download interrupted; resuming', { digest: desc.digest, offset, error: e.message });
        await sleep(200 * resumes, this.opts.signal);
      }
    }
  }

  /** Check credentials: ping and, for token auth, obtain a token (used by `registry login`). */
  async checkLogin(): Promise<void> {
    const ep = this.endpoints[this.endpoints.length - 1]!;
    const ch = await this.ping(ep);
    if (!ch) return;
    if (ch.scheme === 'bearer') {
      await this.fetchToken(ep, ch, false);
      return;
    }
    const res = await this.req(`${ep.base}/v2/`, this.what(ep), { headers: { authorization: (await this.authHeader(ep, ch))! } });
    res.close();
    if (res.status !== 200)
      throw new BangerError(ErrorCode.Auth, `${this.what(ep)}: login refused (HTTP ${res.status})`, { hint: 'check the user name and password' });
  }
}
