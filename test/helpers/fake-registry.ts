import { createReadStream, existsSync, readFileSync, statSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { join } from 'node:path';

/**
 * A tiny registry on 127.0.0.1 that serves an OCI layout directory read-only (manifests by
 * tag or digest, blobs by digest), for failure modes a real registry will not produce:
 * cut-off blobs, oversized manifests, odd media types, stalls, dropped connections. Counts
 * requests per path so tests can prove a blob was (not) downloaded.
 */
export interface FakeHooks {
  /** Return true when the hook answered the request. */
  intercept?(req: IncomingMessage, res: ServerResponse, kind: 'manifest' | 'blob' | 'ping', ref: string): boolean;
}

export class FakeRegistry {
  server?: Server;
  port = 0;
  readonly hits = new Map<string, number>();
  hooks: FakeHooks = {};

  constructor(readonly layoutDir: string) {}

  get host(): string {
    return `127.0.0.1:${this.port}`;
  }

  count(kind: 'manifest' | 'blob', ref: string): number {
    return this.hits.get(`${kind}:${ref}`) ?? 0;
  }

  private tags(): Map<string, { digest: string; mediaType: string }> {
    const idx = JSON.parse(readFileSync(join(this.layoutDir, 'index.json'), 'utf8')) as {
      manifests: { digest: string; mediaType: string; annotations?: Record<string, string> }[];
    };
    const m = new Map<string, { digest: string; mediaType: string }>();
    for (const d of idx.manifests) {
      const t = d.annotations?.['org.opencontainers.image.ref.name'];
      if (t) m.set(t, { digest: d.digest, mediaType: d.mediaType });
    }
    return m;
  }

  async start(): Promise<this> {
    this.server = createServer((req, res) => this.handle(req, res));
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r));
    this.port = (this.server.address() as { port: number }).port;
    return this;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname === '/v2/') {
      if (this.hooks.intercept?.(req, res, 'ping', '')) return;
      res.writeHead(200).end('{}');
      return;
    }
    const m = /^\/v2\/(.+)\/(manifests|blobs)\/([^/]+)$/.exec(url.pathname);
    if (!m) {
      res.writeHead(404).end();
      return;
    }
    const kind = m[2] === 'manifests' ? 'manifest' : 'blob';
    const ref = decodeURIComponent(m[3]!);
    const key = `${kind}:${ref}`;
    this.hits.set(key, (this.hits.get(key) ?? 0) + 1);
    if (this.hooks.intercept?.(req, res, kind, ref)) return;
    let digest = ref;
    let mediaType = 'application/octet-stream';
    if (kind === 'manifest') {
      if (!ref.startsWith('sha256:')) {
        const t = this.tags().get(ref);
        if (!t) {
          res.writeHead(404, { 'content-type': 'application/json' }).end('{"errors":[{"code":"MANIFEST_UNKNOWN"}]}');
          return;
        }
        digest = t.digest;
      }
      const p = join(this.layoutDir, 'blobs', 'sha256', digest.slice(7));
      if (!existsSync(p)) {
        res.writeHead(404).end();
        return;
      }
      const body = readFileSync(p);
      mediaType = (JSON.parse(body.toString()) as { mediaType?: string }).mediaType ?? mediaType;
      res.writeHead(200, { 'content-type': mediaType, 'docker-content-digest': digest, 'content-length': body.length }).end(body);
      return;
    }
    const p = join(this.layoutDir, 'blobs', 'sha256', digest.slice(7));
    if (!existsSync(p)) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-length': statSync(p).size, 'docker-content-digest': digest });
    createReadStream(p).pipe(res);
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    if (this.server) await new Promise((r) => this.server!.close(r));
  }
}
