import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { once } from 'node:events';
import { PassThrough, type Readable } from 'node:stream';
import { Agent, interceptors, request, type Dispatcher } from 'undici';
import { BangerError, ErrorCode, errorMessage } from '../core/errors.js';
import type { Layout } from '../core/paths.js';
import type { ProgressEvent } from '../rpc/protocol.js';
import { closeStream } from './extract.js';
import { KeyedLock } from './lock.js';

/**
 * Content-store downloads: a URL whose sha256 is known lands at `layout.blob(sha)` after
 * streaming to a temp file under `layout.tmp` while hashing, checking Content-Length, then
 * verifying the digest and renaming. A blob already in the store is never downloaded again
 * ("cached"). One download per digest at a time (in-process lock); a second caller waits and
 * then finds the blob cached. On any failure the temp file is removed.
 */

export interface FetchBlobOptions {
  url: string;
  sha256: string;
  layout: Layout;
  /** Label for errors and progress (the kernel name). */
  label: string;
  signal?: AbortSignal;
  progress?: (ev: ProgressEvent) => void;
  dispatcher?: Dispatcher;
  /**
   * Single pass: when the blob is downloaded now, the verified-as-it-goes bytes are also fed to
   * `consume` (e.g. zstd + tar extraction into a staging dir) while they arrive. The blob lands
   * in the store only if `consume` succeeded AND length and digest match; otherwise the error
   * (consumer's first) is thrown after `consume` has settled. Not called for a cached blob.
   */
  consume?: (stream: Readable, total: number | undefined) => Promise<unknown>;
}

export interface FetchBlobResult {
  path: string;
  /** "downloaded" when fetched now (and `consume` ran), "cached" when the store already had it. */
  status: 'downloaded' | 'cached';
  bytes: number;
}

const digestLock = new KeyedLock();
let defaultDispatcher: Dispatcher | undefined;
function dispatcher(): Dispatcher {
  defaultDispatcher ??= new Agent({ allowH2: false, headersTimeout: 60_000, bodyTimeout: 120_000 }).compose(interceptors.redirect({ maxRedirections: 5 }));
  return defaultDispatcher;
}

export async function fetchBlob(opts: FetchBlobOptions): Promise<FetchBlobResult> {
  return digestLock.run(opts.sha256, async () => {
    const path = opts.layout.blob(opts.sha256);
    const st = await stat(path).catch(() => undefined);
    if (st?.isFile()) {
      opts.progress?.({ stage: 'download', key: opts.label, message: 'used cache', current: st.size, total: st.size, done: true });
      return { path, status: 'cached' as const, bytes: st.size };
    }
    const bytes = await downloadVerified(opts, path);
    return { path, status: 'downloaded' as const, bytes };
  }, opts.signal);
}

async function downloadVerified(opts: FetchBlobOptions, finalPath: string): Promise<number> {
  const { url, label, signal } = opts;
  await mkdir(opts.layout.tmp, { recursive: true });
  await mkdir(dirname(finalPath), { recursive: true });
  const tmp = join(opts.layout.tmp, `blob-${opts.sha256.slice(0, 16)}-${randomBytes(4).toString('hex')}.tmp`);
  try {
    let res: Dispatcher.ResponseData;
    try {
      res = await request(url, { method: 'GET', signal, dispatcher: opts.dispatcher ?? dispatcher() });
    } catch (e) {
      throw netError(label, url, e, signal);
    }
    if (res.statusCode < 200 || res.statusCode >= 300) {
      await res.body.dump().catch(() => {});
      throw new BangerError(ErrorCode.Http, `kernel ${label}: GET ${url} returned HTTP ${res.statusCode}`, {
        hint: res.statusCode === 404 ? 'the catalog points to a file that does not exist; check the catalog or try again later' : 'the server failed; try again later',
        details: { url, status: res.statusCode },
      });
    }
    const lenHeader = res.headers['content-length'];
    const total = typeof lenHeader === 'string' && /^\d+$/.test(lenHeader) ? Number(lenHeader) : undefined;
    const hash = createHash('sha256');
    const out = createWriteStream(tmp, { mode: 0o644 });
    let got = 0;
    let lastEmit = 0;
    // The consumer (extraction) reads a tee of the body; its failure stops the download.
    // Its own failure is reported; failures caused by us stopping it (download error) are not.
    let consumerError: unknown;
    let stopping = false;
    const pass = opts.consume ? new PassThrough({ highWaterMark: 1 << 20 }) : undefined;
    const consumer = opts.consume
      ? opts.consume(pass!, total).then(
          () => undefined,
          (e) => {
            if (stopping) return;
            consumerError ??= e;
            res.body.destroy();
          },
        )
      : undefined;
    const settleConsumer = async (why: unknown) => {
      if (!pass || !consumer) return;
      stopping = true;
      if (!pass.destroyed) pass.destroy(why instanceof Error ? why : new Error(String(why)));
      await consumer;
    };
    opts.progress?.({ stage: 'download', key: label, current: 0, total });
    try {
      for await (const chunk of res.body) {
        const buf = chunk as Buffer;
        hash.update(buf);
        got += buf.length;
        if (!out.write(buf)) await once(out, 'drain');
        if (pass && !consumerError && !pass.write(buf)) await Promise.race([once(pass, 'drain').catch(() => {}), consumer]);
        if (consumerError) throw consumerError;
        const now = Date.now();
        if (now - lastEmit > 100) {
          lastEmit = now;
          opts.progress?.({ stage: 'download', key: label, current: got, total });
        }
      }
    } catch (e) {
      await closeStream(out);
      await settleConsumer(e);
      if (consumerError) throw consumerError;
      if (total !== undefined && got < total && !signal?.aborted) throw truncated(label, url, got, total, e);
      throw netError(label, url, e, signal);
    }
    out.end();
    await once(out, 'close');
    if (total !== undefined && got !== total) {
      await settleConsumer(new Error('download truncated'));
      throw truncated(label, url, got, total);
    }
    pass?.end();
    await consumer;
    if (consumerError) throw consumerError;
    const digest = hash.digest('hex');
    opts.progress?.({ stage: 'download', key: label, message: 'downloaded', current: got, total: got, done: true });
    opts.progress?.({ stage: 'verify', key: label, message: 'sha256' });
    if (digest !== opts.sha256) {
      throw new BangerError(ErrorCode.Digest, `kernel ${label}: sha256 mismatch for ${url}: expected ${opts.sha256}, got ${digest}`, {
        hint: 'the file on the server is not the one the catalog names; nothing was installed',
        details: { url, expected: opts.sha256, actual: digest },
      });
    }
    await rename(tmp, finalPath);
    opts.progress?.({ stage: 'verify', key: label, message: 'sha256 ok', done: true });
    return got;
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

function truncated(label: string, url: string, got: number, total: number, cause?: unknown): BangerError {
  return new BangerError(ErrorCode.Http, `kernel ${label}: download of ${url} truncated: received ${got} of ${total} bytes`, {
    hint: 'the connection was cut; try again',
    cause,
    details: { url, received: got, expected: total },
  });
}

function netError(label: string, url: string, e: unknown, signal?: AbortSignal): BangerError {
  if (e instanceof BangerError) return e;
  if (signal?.aborted) return new BangerError(ErrorCode.Cancelled, `kernel ${label}: download cancelled`, { cause: e });
  return new BangerError(ErrorCode.Http, `kernel ${label}: GET ${url} failed: ${errorMessage(e)}`, {
    hint: 'check the URL and your network, then try again',
    cause: e,
    details: { url },
  });
}
