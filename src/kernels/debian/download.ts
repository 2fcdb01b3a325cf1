import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, type WriteStream } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import { once } from 'node:events';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ContentStore } from '../../core/content-store.js';
import { BangerError, ErrorCode, throwIfAborted } from '../../core/errors.js';
import { sha256File, tempSibling } from '../../core/fsutil.js';
import { defaultHttp, type HttpClient } from '../../core/http.js';

/**
 * Downloads from a Debian mirror. Mirrors are `http://`, `https://` (through the one HTTP client:
 * deadlines, size caps, abort on any consumer error) or `file://` URLs. Every download lands in
 * a temp file beside its target and is renamed only once its size and sha256 (when given)
 * match; on any failure nothing is left at the target or the temp path when this returns.
 */

export interface DownloadOptions {
  /** Expected sha256 (hex). When given, a mismatch is E_DIGEST and the file is removed. */
  sha256?: string;
  /** Expected size in bytes (checked when given, and a cap while reading). */
  size?: number;
  signal?: AbortSignal;
  /** Called with bytes received so far. */
  onBytes?: (received: number, total?: number) => void;
  /** What is being waited for (progress). */
  onWait?: (message: string) => void;
  /** Human name used in errors, e.g. "InRelease". */
  what: string;
  http?: HttpClient;
}

/** Thrown (code E_NOT_FOUND) when the server answers 404/410 or the file does not exist. */
export function isNotFound(e: unknown): boolean {
  return e instanceof BangerError && e.code === ErrorCode.NotFound;
}

/** Join a mirror base URL and an archive-relative path (`dists/...`, `pool/...`). */
export function mirrorUrl(mirror: string, rel: string): string {
  return mirror.replace(/\/+$/, '') + '/' + rel.replace(/^\/+/, '');
}

/** Indexes and InRelease without a signed size: refused past this. */
const MAX_UNSIZED = 256 * 1024 * 1024;

/** The bytes of `url`, chunk by chunk; leaving the loop early aborts the request. */
async function* source(url: string, opts: DownloadOptions): AsyncGenerator<Buffer> {
  const u = new URL(url);
  if (u.protocol === 'file:') {
    const path = fileURLToPath(u);
    const st = await stat(path).catch((e) => {
      throw new BangerError(ErrorCode.NotFound, `${opts.what}: ${url} does not exist`, { cause: e, details: { url } });
    });
    if (!st.isFile()) throw new BangerError(ErrorCode.NotFound, `${opts.what}: ${url} is not a file`, { details: { url } });
    for await (const c of createReadStream(path, { signal: opts.signal })) yield c as Buffer;
    return;
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw new BangerError(ErrorCode.Invalid, `${opts.what}: unsupported mirror URL scheme '${u.protocol}' in ${url}`, {
      hint: 'use an http://, https:// or file:// Debian mirror (config debianMirror)',
    });
  }
  const big = opts.size !== undefined && opts.size > 16 * 1024 * 1024;
  const res = await (opts.http ?? defaultHttp()).open(url, {
    what: opts.what,
    signal: opts.signal,
    deadline: big ? 'download' : 'document',
    maxBytes: opts.size ?? MAX_UNSIZED,
    onWait: opts.onWait,
  });
  if (res.status === 404 || res.status === 410) {
    res.close();
    throw new BangerError(ErrorCode.NotFound, `${opts.what}: ${url} not found (HTTP ${res.status})`, { details: { url, status: res.status } });
  }
  if (res.status < 200 || res.status >= 300) {
    res.close();
    throw new BangerError(ErrorCode.Http, `${opts.what}: ${url} answered HTTP ${res.status}`, {
      hint: 'check the Debian mirror (config debianMirror / BANGER_DEBIAN_MIRROR)',
      details: { url, status: res.status },
    });
  }
  yield* res.chunks();
}

/** Stream `url` into `out` (already open) verifying size and sha256; returns the sha256 (hex). */
async function fetchInto(url: string, write: (c: Buffer) => void | Promise<void>, opts: DownloadOptions): Promise<string> {
  const hash = createHash('sha256');
  let received = 0;
  for await (const chunk of source(url, opts)) {
    received += chunk.length;
    if (opts.size !== undefined && received > opts.size) {
      throw new BangerError(ErrorCode.Digest, `${opts.what}: ${url} is larger than the ${opts.size} bytes the signed index promises`, { details: { url } });
    }
    hash.update(chunk);
    await write(chunk);
    opts.onBytes?.(received, opts.size);
  }
  const got = hash.digest('hex');
  if (opts.size !== undefined && received !== opts.size) {
    throw new BangerError(ErrorCode.Digest, `${opts.what}: ${url} has ${received} bytes, the signed index says ${opts.size}`, {
      hint: 'the mirror is serving a truncated or different file; try again or use another mirror',
      details: { url, expectedSize: opts.size, size: received },
    });
  }
  if (opts.sha256 !== undefined && got !== opts.sha256.toLowerCase()) {
    throw new BangerError(ErrorCode.Digest, `${opts.what}: sha256 mismatch for ${url}: expected ${opts.sha256}, got ${got}`, {
      hint: 'the mirror is serving a file that does not match the signed index; try another mirror',
      details: { url, expected: opts.sha256, actual: got },
    });
  }
  return got;
}

/**
 * Download `url` to `target` atomically, verifying size and sha256 while streaming.
 * Returns the sha256 (hex) of what was written.
 */
export async function download(url: string, target: string, opts: DownloadOptions): Promise<string> {
  throwIfAborted(opts.signal);
  await mkdir(dirname(target), { recursive: true });
  const tmp = tempSibling(target);
  const out: WriteStream = createWriteStream(tmp, { mode: 0o644 });
  try {
    const got = await fetchInto(
      url,
      async (c) => {
        if (!out.write(c)) await once(out, 'drain');
      },
      opts,
    );
    out.end();
    await once(out, 'close');
    await rename(tmp, target);
    return got;
  } catch (e) {
    out.destroy();
    if (!out.closed) await once(out, 'close').catch(() => {});
    await rm(tmp, { force: true });
    if (opts.signal?.aborted) throwIfAborted(opts.signal);
    throw e;
  }
}

/**
 * Get a verified file through the content store: if the blob exists and its sha256 matches,
 * use it ("used-cache"); else download it through the store's writer ("downloaded").
 * Returns the blob's path too.
 */
export async function fetchCached(
  url: string,
  store: ContentStore,
  opts: DownloadOptions & { sha256: string },
): Promise<{ how: 'downloaded' | 'used-cache'; path: string }> {
  const digest = `sha256:${opts.sha256.toLowerCase()}`;
  const path = store.path(digest);
  return store.withLock(
    digest,
    async () => {
      const st = await stat(path).catch(() => undefined);
      if (st?.isFile()) {
        if ((opts.size === undefined || st.size === opts.size) && (await sha256File(path)) === opts.sha256.toLowerCase())
          return { how: 'used-cache' as const, path };
        await store.remove(digest); // corrupt cache entry: replace it
      }
      throwIfAborted(opts.signal);
      const w = await store.writer({ digest, size: opts.size });
      try {
        await fetchInto(url, (c) => w.write(c), opts);
        await w.commit();
      } catch (e) {
        await w.abort();
        if (opts.signal?.aborted) throwIfAborted(opts.signal);
        throw e;
      }
      return { how: 'downloaded' as const, path };
    },
    opts.signal,
  );
}
