import { PassThrough, type Readable } from 'node:stream';
import { once } from 'node:events';
import { stat } from 'node:fs/promises';
import { ContentStore } from '../core/content-store.js';
import { BangerError, ErrorCode } from '../core/errors.js';
import { defaultHttp, redact, type HttpClient } from '../core/http.js';
import type { Layout } from '../core/paths.js';
import type { ProgressEvent } from '../core/operation.js';

/**
 * Content-store downloads: a URL whose sha256 is known lands at `layout.blob(sha)` through the
 * one content store (temp file beside it while hashing, Content-Length checked, digest verified,
 * rename). A blob already in the store is never downloaded again ("cached"). One download per
 * digest at a time (the store's per-digest lock); a second caller waits and then finds the blob
 * cached. On any failure the temp file is removed and the request aborted before this returns.
 */

export interface FetchBlobOptions {
  url: string;
  sha256: string;
  layout: Layout;
  /** Label for errors and progress (the kernel name). */
  label: string;
  signal?: AbortSignal;
  progress?: (ev: ProgressEvent) => void;
  /** HTTP client (deadlines, caps); default limits when absent. */
  http?: HttpClient;
  /** Refuse bodies larger than this many bytes (the catalog's size, with slack). */
  maxBytes?: number;
  /**
   * Single pass: when the blob is downloaded now, the verified-as-it-goes bytes are also fed to
   * `consume` (e.g. zstd + tar extraction into a staging dir) while they arrive. The blob lands
   * in the store only if `consume` succeeded AND length and digest match; otherwise the error
   * (consumer's first) is thrown after `consume` has settled. Not called for a cached blob.
   */
  consume?: (stream: Readable, total: number | undefined) => Promise<unknown>;
  /** The store to write through (a pull's `PullStore`, which journals what it adds); default: the root's. */
  store?: ContentStore;
}

export interface FetchBlobResult {
  path: string;
  /** "downloaded" when fetched now (and `consume` ran), "cached" when the store already had it. */
  status: 'downloaded' | 'cached';
  bytes: number;
}

export async function fetchBlob(opts: FetchBlobOptions): Promise<FetchBlobResult> {
  const store = opts.store ?? new ContentStore(opts.layout);
  const digest = `sha256:${opts.sha256}`;
  return store.withLock(
    digest,
    async () => {
      const path = store.path(digest);
      const st = await stat(path).catch(() => undefined);
      if (st?.isFile()) {
        opts.progress?.({ stage: 'download', key: opts.label, message: 'used cache', current: st.size, total: st.size, done: true });
        return { path, status: 'cached' as const, bytes: st.size };
      }
      const bytes = await downloadVerified(opts, store, digest);
      return { path, status: 'downloaded' as const, bytes };
    },
    opts.signal,
  );
}

async function downloadVerified(opts: FetchBlobOptions, store: ContentStore, digest: string): Promise<number> {
  const { url, label, signal } = opts;
  const http = opts.http ?? defaultHttp();
  const res = await http.open(url, {
    what: `kernel ${label}: bundle`,
    signal,
    deadline: 'download',
    maxBytes: opts.maxBytes,
    onWait: (message) => opts.progress?.({ stage: 'download', key: label, message }),
  });
  if (res.status < 200 || res.status >= 300) {
    res.close();
    throw new BangerError(ErrorCode.Http, `kernel ${label}: GET ${redact(url)} returned HTTP ${res.status}`, {
      hint:
        res.status === 404 ? 'the catalog points to a file that does not exist; check the catalog or try again later' : 'the server failed; try again later',
      details: { url: redact(url), status: res.status },
    });
  }
  const total = res.contentLength;
  const w = await store.writer({ digest });
  // The consumer (extraction) reads a tee of the body. Its failure stops the download; its
  // own failure is reported, failures caused by us stopping it (download error) are not.
  let consumerError: unknown;
  let stopping = false;
  const pass = opts.consume ? new PassThrough({ highWaterMark: 1 << 20 }) : undefined;
  const consumer = opts.consume
    ? opts.consume(pass!, total).then(
        () => undefined,
        (e) => {
          if (!stopping) consumerError ??= e;
        },
      )
    : undefined;
  const settleConsumer = async (why: unknown) => {
    if (!pass || !consumer) return;
    stopping = true;
    if (!pass.destroyed) pass.destroy(why instanceof Error ? why : new Error(String(why)));
    await consumer;
  };
  let got = 0;
  let lastEmit = 0;
  opts.progress?.({ stage: 'download', key: label, current: 0, total });
  try {
    try {
      for await (const buf of res.chunks()) {
        w.write(buf);
        got += buf.length;
        if (pass && !consumerError && !pass.write(buf)) await Promise.race([once(pass, 'drain').catch(() => {}), consumer]);
        if (consumerError) throw consumerError; // leaving the loop aborts the request
        const now = Date.now();
        if (now - lastEmit > 100) {
          lastEmit = now;
          opts.progress?.({ stage: 'download', key: label, current: got, total });
        }
      }
    } catch (e) {
      await settleConsumer(e);
      throw consumerError ?? e;
    }
    pass?.end();
    await consumer;
    if (consumerError) throw consumerError;
    opts.progress?.({ stage: 'download', key: label, message: 'downloaded', current: got, total: got, done: true });
    opts.progress?.({ stage: 'verify', key: label, message: 'sha256' });
    try {
      await w.commit();
    } catch (e) {
      if (e instanceof BangerError && e.code === ErrorCode.Digest) {
        throw new BangerError(
          ErrorCode.Digest,
          `kernel ${label}: sha256 mismatch for ${redact(url)}: expected ${opts.sha256}, got ${String(e.details?.['actual'] ?? '?').replace('sha256:', '')}`,
          {
            hint: 'the file on the server is not the one the catalog names; nothing was installed',
            cause: e,
            details: { url: redact(url), expected: opts.sha256, actual: e.details?.['actual'] },
          },
        );
      }
      throw e;
    }
    opts.progress?.({ stage: 'verify', key: label, message: 'sha256 ok', done: true });
    return got;
  } catch (e) {
    res.close();
    await w.abort();
    throw e;
  }
}
