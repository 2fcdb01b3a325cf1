import { createReadStream } from 'node:fs';
import { PassThrough, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { createHash } from 'node:crypto';
import { BangerError, ErrorCode } from '../core/errors.js';
import { isDecompressError, zstdDecompressor } from '../core/zstd.js';
import type { Logger } from '../core/log.js';
import type { ProgressEvent } from '../core/operation.js';
import type { LayerApplier } from './apply.js';
import type { RegistryClient } from './registry/client.js';
import { verifyBlob } from '../core/content-store.js';
import { layerCompression, type Compression, type Descriptor } from './registry/manifest.js';
import type { BlobStore } from './store.js';
import { TarReader } from '../core/tar-reader.js';

const BUFFER = 8 * 1024 * 1024;

export function shortDigest(d: string): string {
  return d.replace(/^sha256:/, '').slice(0, 12);
}

/** True when the stored blob has the size and sha256 its descriptor says (read once, before use). */
async function intactInStore(store: BlobStore, desc: Descriptor): Promise<boolean> {
  const h = createHash('sha256');
  let n = 0;
  for await (const c of createReadStream(store.path(desc.digest), { highWaterMark: 1024 * 1024 })) {
    h.update(c as Buffer);
    n += (c as Buffer).length;
  }
  try {
    verifyBlob(desc, n, 'sha256:' + h.digest('hex'));
    return true;
  } catch {
    return false;
  }
}

/** Decompress and apply one tar stream to the applier. */
export async function applyTarStream(
  source: AsyncIterable<Buffer> | Readable,
  compression: Compression,
  applier: LayerApplier,
  signal?: AbortSignal,
): Promise<void> {
  const reader = new TarReader((e) => applier.entry(e));
  let sinkError: unknown;
  const sink = async (src: AsyncIterable<Buffer>) => {
    // errors of our own (tar, applier) are kept: pipeline may report its teardown instead
    const own = async (f: () => unknown) => {
      try {
        await f();
      } catch (e) {
        sinkError ??= e;
        throw e;
      }
    };
    for await (const c of src) await own(() => reader.push(c));
    await own(() => reader.end());
  };
  // Generous buffers between the stages so download, decompression (zlib/zstd run on the
  // thread pool) and extraction (main thread) overlap instead of taking turns.
  const input = source instanceof Readable ? source : Readable.from(source, { objectMode: false, highWaterMark: BUFFER });
  const ahead = () => new PassThrough({ highWaterMark: BUFFER });
  try {
    if (compression === 'gzip') await pipeline(input, ahead(), createGunzip({ chunkSize: 256 * 1024 }), ahead(), sink, { signal });
    else if (compression === 'zstd') await pipeline(input, ahead(), zstdDecompressor(31), ahead(), sink, { signal });
    else await pipeline(input, ahead(), sink, { signal });
  } catch (err) {
    const e = sinkError ?? err;
    applier.release();
    if (signal?.aborted) throw new BangerError(ErrorCode.Cancelled, 'operation cancelled', { cause: e });
    if (e instanceof BangerError) throw e;
    if (isDecompressError(e)) {
      throw new BangerError(ErrorCode.Invalid, `layer is not valid ${compression} data: ${(e as Error).message}`, { cause: e });
    }
    throw e;
  }
}

export interface LayerPlan {
  layers: Descriptor[];
  client: RegistryClient;
  store: BlobStore;
  applier: LayerApplier;
  log: Logger;
  progress: (ev: ProgressEvent) => void;
  signal: AbortSignal;
}

/** Throttled per-layer byte progress. */
function byteReporter(progress: (ev: ProgressEvent) => void, key: string, total: number, message: string): (n: number) => void {
  let last = 0;
  let cur = 0;
  return (n) => {
    cur += n;
    const now = Date.now();
    if (now - last > 100 || cur === total) {
      last = now;
      progress({ stage: 'layer', key, current: cur, total, message });
    }
  };
}

/**
 * Download (when missing) and apply every layer, oldest first.
 * - A cached blob is re-hashed before it is applied; a damaged one (size or digest differs)
 *   is removed from the store and downloaded again, never applied.
 * - A missing blob is downloaded under its per-digest lock and applied *while* it downloads
 *   (one pass: hash + temp file + decompress + extract); the temp file is renamed into the
 *   store only after the digest matched.
 * - Layers after the first are prefetched into the store in the background (2 at a time).
 * On failure every in-flight download is aborted and awaited, so no temp file outlives us.
 */
// biome-ignore lint/complexity/noExcessiveLinesPerFunction: the download/apply pipeline shares its abort controller, in-flight set and ordering state across its closures; split pieces would pass all of it around
export async function pullAndApplyLayers(plan: LayerPlan): Promise<{ downloaded: number; cached: number }> {
  const { layers, store, client, applier, progress } = plan;
  for (const l of layers) layerCompression(l.mediaType, l.digest); // fail before any download
  const inner = new AbortController();
  const onAbort = () => inner.abort();
  plan.signal.addEventListener('abort', onAbort, { once: true });
  let downloaded = 0;
  let cached = 0;
  const prefetches: Promise<void>[] = [];
  const download = async (desc: Descriptor, consume?: (src: AsyncIterable<Buffer>) => Promise<void>) => {
    const key = shortDigest(desc.digest);
    const w = await store.writer(desc);
    const report = byteReporter(progress, key, desc.size, 'downloading');
    const src = client.blobChunks(desc)[Symbol.asyncIterator]();
    // The consumer may stop early (bad tar, unsafe entry): `src` stays open so the rest of
    // the blob can be drained and its digest checked, which is the more useful error when
    // the bytes were corrupt.
    let downloadFailed = false;
    async function* tee(): AsyncGenerator<Buffer> {
      for (;;) {
        let r: IteratorResult<Buffer>;
        try {
          r = await src.next();
        } catch (e) {
          downloadFailed = true; // the download itself failed: nothing left to drain
          throw e;
        }
        if (r.done) return;
        if (inner.signal.aborted) throw new BangerError(ErrorCode.Cancelled, 'operation cancelled');
        w.write(r.value);
        report(r.value.length);
        yield r.value;
      }
    }
    try {
      if (consume) await consume(tee());
      else for await (const _ of tee());
    } catch (e) {
      if (downloadFailed || inner.signal.aborted || plan.signal.aborted || (e instanceof BangerError && e.code === ErrorCode.Cancelled)) {
        await src.return?.(undefined).catch(() => {});
        await w.abort();
        throw e;
      }
      try {
        for (;;) {
          const r = await src.next();
          if (r.done) break;
          w.write(r.value);
        }
        await w.commit(); // digest fine: the blob is kept, the extraction error stands
        downloaded++;
      } catch (drainErr) {
        await w.abort();
        if (drainErr instanceof BangerError && drainErr.code === ErrorCode.Digest) throw drainErr;
      }
      throw e;
    }
    try {
      await w.commit();
      downloaded++;
    } catch (e) {
      await w.abort();
      throw e;
    }
  };
  try {
    // background prefetch of layers 2..n
    let next = 1;
    const worker = async () => {
      while (next < layers.length && !inner.signal.aborted) {
        const desc = layers[next++]!;
        await store.withLock(desc.digest, async () => {
          if (await store.has(desc.digest)) return;
          await download(desc);
        });
      }
    };
    for (let i = 0; i < 2; i++)
      prefetches.push(worker().catch((e) => plan.log.debug('prefetch failed (retried when the layer is applied)', { error: (e as Error).message })));

    for (const desc of layers) {
      const key = shortDigest(desc.digest);
      const compression = layerCompression(desc.mediaType, desc.digest);
      applier.beginLayer(desc.digest);
      await store
        .withLock(desc.digest, async () => {
          if ((await store.has(desc.digest)) && !(await intactInStore(store, desc))) {
            // damaged in the store (disk error, tampering): never applied; fetched again below
            plan.log.warn('cached layer does not match its digest; downloading it again', { digest: desc.digest });
            progress({ stage: 'layer', key, current: 0, total: desc.size, message: 'cached copy damaged: downloading again' });
            await store.remove(desc.digest);
          }
          if (await store.has(desc.digest)) {
            cached++;
            progress({ stage: 'layer', key, current: 0, total: desc.size, message: 'extracting (cached)' });
            const report = byteReporter(progress, key, desc.size, 'extracting (cached)');
            async function* chunks(): AsyncGenerator<Buffer> {
              for await (const c of createReadStream(store.path(desc.digest), { highWaterMark: 1024 * 1024 })) {
                report((c as Buffer).length);
                yield c as Buffer;
              }
            }
            await applyTarStream(chunks(), compression, applier, inner.signal);
          } else {
            await download(desc, (src) => applyTarStream(src, compression, applier, inner.signal));
          }
        })
        .catch((e) => {
          if (e instanceof BangerError && e.code !== ErrorCode.Cancelled && !e.message.includes(shortDigest(desc.digest))) {
            throw new BangerError(e.code, `layer ${desc.digest}: ${e.message}`, { hint: e.hint, cause: e, details: e.details });
          }
          throw e;
        });
      progress({ stage: 'layer', key, current: desc.size, total: desc.size, done: true, message: 'applied' });
    }
    await Promise.all(prefetches);
    return { downloaded, cached };
  } catch (e) {
    inner.abort();
    await Promise.allSettled(prefetches);
    throw e;
  } finally {
    plan.signal.removeEventListener('abort', onAbort);
  }
}
