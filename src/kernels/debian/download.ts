import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Transform } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { BangerError, ErrorCode, errorMessage, throwIfAborted } from '../../core/errors.js';
import { sha256File, tempSibling } from '../../core/fsutil.js';

/**
 * Downloads from a Debian mirror. Mirrors are `http://`, `https://` or `file://` URLs.
 * Every download lands in a temp file beside its target and is renamed only once its size
 * and sha256 (when given) match; on any failure nothing is left at the target or the temp path.
 */

export interface DownloadOptions {
  /** Expected sha256 (hex). When given, a mismatch is E_DIGEST and the file is removed. */
  sha256?: string;
  /** Expected size in bytes (checked when given). */
  size?: number;
  signal?: AbortSignal;
  /** Called with bytes received so far. */
  onBytes?: (received: number, total?: number) => void;
  /** Human name used in errors, e.g. "InRelease". */
  what: string;
}

/** Thrown (code E_NOT_FOUND) when the server answers 404/410 or the file does not exist. */
export function isNotFound(e: unknown): boolean {
  return e instanceof BangerError && e.code === ErrorCode.NotFound;
}

/** Join a mirror base URL and an archive-relative path (`dists/...`, `pool/...`). */
export function mirrorUrl(mirror: string, rel: string): string {
  return mirror.replace(/\/+$/, '') + '/' + rel.replace(/^\/+/, '');
}

async function openSource(url: string, what: string, signal?: AbortSignal): Promise<{ body: Readable; total?: number }> {
  const u = new URL(url);
  if (u.protocol === 'file:') {
    const path = fileURLToPath(u);
    try {
      const st = await stat(path);
      return { body: createReadStream(path), total: st.size };
    } catch (e) {
      throw new BangerError(ErrorCode.NotFound, `${what}: ${url} does not exist`, { cause: e, details: { url } });
    }
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw new BangerError(ErrorCode.Invalid, `${what}: unsupported mirror URL scheme '${u.protocol}' in ${url}`, { hint: 'use an http://, https:// or file:// Debian mirror (config debianMirror)' });
  }
  let res: Response;
  try {
    res = await fetch(url, { signal, redirect: 'follow' });
  } catch (e) {
    throwIfAborted(signal);
    throw new BangerError(ErrorCode.Http, `${what}: cannot fetch ${url}: ${errorMessage((e as Error).cause ?? e)}`, {
      hint: 'check the Debian mirror (config debianMirror / BANGER_DEBIAN_MIRROR) and the network',
      cause: e,
      details: { url },
    });
  }
  if (res.status === 404 || res.status === 410) {
    await res.body?.cancel();
    throw new BangerError(ErrorCode.NotFound, `${what}: ${url} not found (HTTP ${res.status})`, { details: { url, status: res.status } });
  }
  if (!res.ok || !res.body) {
    await res.body?.cancel();
    throw new BangerError(ErrorCode.Http, `${what}: ${url} answered HTTP ${res.status}`, { hint: 'check the Debian mirror', details: { url, status: res.status } });
  }
  const len = Number(res.headers.get('content-length'));
  return { body: Readable.fromWeb(res.body as import('node:stream/web').ReadableStream), total: Number.isFinite(len) && len > 0 ? len : undefined };
}

/**
 * Download `url` to `target` atomically, verifying size and sha256 while streaming.
 * Returns the sha256 (hex) of what was written.
 */
export async function download(url: string, target: string, opts: DownloadOptions): Promise<string> {
  throwIfAborted(opts.signal);
  await mkdir(dirname(target), { recursive: true });
  const tmp = tempSibling(target);
  const hash = createHash('sha256');
  let received = 0;
  try {
    const { body, total } = await openSource(url, opts.what, opts.signal);
    const counter = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        received += chunk.length;
        if (opts.size !== undefined && received > opts.size) {
          cb(new BangerError(ErrorCode.Digest, `${opts.what}: ${url} is larger than the ${opts.size} bytes the signed index promises`, { details: { url } }));
          return;
        }
        hash.update(chunk);
        opts.onBytes?.(received, opts.size ?? total);
        cb(null, chunk);
      },
    });
    await pipeline(body, counter, createWriteStream(tmp, { mode: 0o644 }), { signal: opts.signal });
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
    await rename(tmp, target);
    return got;
  } catch (e) {
    await rm(tmp, { force: true });
    if (opts.signal?.aborted) throwIfAborted(opts.signal);
    throw e;
  }
}

/**
 * Get a file through the content store: if `blobPath` exists and its sha256 matches, use it
 * ("used-cache"); else download to it with verification ("downloaded").
 */
export async function fetchCached(url: string, blobPath: string, opts: DownloadOptions & { sha256: string }): Promise<'downloaded' | 'used-cache'> {
  try {
    const st = await stat(blobPath);
    if ((opts.size === undefined || st.size === opts.size) && (await sha256File(blobPath)) === opts.sha256.toLowerCase()) return 'used-cache';
    await rm(blobPath, { force: true }); // corrupt cache entry: replace it
  } catch {
    /* not cached */
  }
  await download(url, blobPath, opts);
  return 'downloaded';
}
