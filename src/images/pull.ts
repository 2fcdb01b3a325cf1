import { BangerError, ErrorCode } from '../core/errors.js';
import { httpFor } from '../core/http.js';
import type { Logger } from '../core/log.js';
import type { ProgressEvent } from '../core/operation.js';
import { PullStore } from '../core/pull-store.js';
import type { ImageBase, OpContext } from './image-base.js';
import { pullAndApplyLayers } from './layers.js';
import { buildImage } from './pipeline.js';
import type { ImageRecord } from './record.js';
import { defaultImageName, parseReference, type ImageReference } from './reference.js';
import { RegistryClient } from './registry/client.js';
import { formatPlatform, layerCompression, parsePlatform, type Platform } from './registry/manifest.js';
import { resolveImage } from './resolve.js';
import { buildKey } from './reuse.js';

export interface PullParams {
  ref: string;
  /** Re-use the ext4 of an identical local build (default true; the benchmark turns it off). */
  reuse?: boolean;
  name?: string;
  kernelRef?: string;
  platform?: string;
  sizeBytes?: number;
}

/** `banger image pull`: resolve, verify and apply the image, then build its ext4. */
export async function pullImage(ib: ImageBase, p: PullParams, op: OpContext = {}): Promise<ImageRecord> {
  const signal = op.signal ?? new AbortController().signal;
  const progress = op.progress ?? (() => {});
  const ref = parseReference(p.ref);
  const name = p.name ?? defaultImageName(ref);
  const want = parsePlatform(p.platform ?? 'linux/amd64');
  const kernelRef = await ib.checkKernel(p.kernelRef);
  // Pulling a name that exists from the same reference is like `docker pull`: it checks the
  // registry and is a no-op when nothing changed. A changed image is never swapped under the
  // VMs whose disks are backed by it: that is E_EXISTS with the way out.
  const existing = ib.repo.find(name);
  if (!existing || existing.sourceRef !== ref.canonical) ib.reserveCheck(name);
  const log = ib.ctx.log.child({ op: 'image.pull', image: name, ref: ref.canonical });
  const client = registryClient(ib, ref, signal, progress);
  // What this pull adds to the content store is removed again if it fails (core/pull-store.ts).
  const store = new PullStore(ib.ctx.layout, ib.ctx.db);
  try {
    return await pullWith(ib, p, { ref, name, want, kernelRef, existing, log, client, store }, signal, progress);
  } catch (e) {
    await store.discard(log);
    throw e;
  } finally {
    store.end();
  }
}

function registryClient(ib: ImageBase, ref: ImageReference, signal?: AbortSignal, progress?: (ev: ProgressEvent) => void): RegistryClient {
  return new RegistryClient(ref, {
    creds: ib.creds,
    log: ib.ctx.log,
    insecureRegistries: ib.ctx.config.insecureRegistries,
    mirrors: ib.ctx.config.registryMirrors,
    signal,
    http: httpFor(ib.ctx.config),
    onWait: progress ? (message) => progress({ stage: 'http', message }) : undefined,
  });
}

async function pullWith(
  ib: ImageBase,
  p: PullParams,
  x: {
    ref: ImageReference;
    name: string;
    want: Platform;
    kernelRef: string | null;
    existing: ImageRecord | undefined;
    log: Logger;
    client: RegistryClient;
    store: PullStore;
  },
  signal: AbortSignal,
  progress: (ev: ProgressEvent) => void,
): Promise<ImageRecord> {
  const { ref, name, want, kernelRef, existing, log, client, store } = x;

  progress({ stage: 'resolve', message: `resolving ${ref.canonical}` });
  const { manifest, manifestDigest, manifestBlobs, rawConfig, config } = await resolveImage(client, store, ref, want);
  log.info('resolved', { digest: manifestDigest, layers: manifest.layers.length });
  if (existing) {
    const same =
      existing.digest === manifestDigest &&
      existing.platform === formatPlatform(want) &&
      (p.sizeBytes === undefined || p.sizeBytes === existing.sizeBytes) &&
      (kernelRef === null || kernelRef === existing.kernelRef);
    if (same) {
      progress({ stage: 'resolve', message: `image '${name}' is up to date (${manifestDigest.slice(0, 19)})`, done: true });
      return existing;
    }
    const what =
      existing.digest !== manifestDigest
        ? `the registry now has ${manifestDigest.slice(0, 19)}, the local image is ${existing.digest.slice(0, 19)}`
        : 'with other settings (--platform, --size or --kernel-ref)';
    throw new BangerError(ErrorCode.Exists, `image '${name}' already exists from ${ref.canonical}; ${what}`, {
      hint: `remove it first ('banger image rm ${name}'; VMs made from it need it) or pull under another --name`,
    });
  }
  return buildImage(
    ib,
    {
      name,
      sourceRef: ref.canonical,
      digest: manifestDigest,
      platform: formatPlatform(want),
      config,
      kernelRef,
      fromRegistry: true,
      sizeBytes: p.sizeBytes,
      rawConfig,
      estimateBytes: manifest.layers.reduce((n, l) => n + l.size * (layerCompression(l.mediaType, l.digest) === 'none' ? 1.1 : 4), 0) + 64 * 1024 * 1024,
      buildKey: p.reuse === false ? undefined : await buildKey({ digest: manifestDigest, platform: formatPlatform(want), sizeBytes: p.sizeBytes }),
      blobs: () => [...manifestBlobs, manifest.config.digest, ...manifest.layers.map((l) => l.digest)],
      fill: async (_root, applier) => {
        const r = await pullAndApplyLayers({ layers: manifest.layers, client, store, applier, log, progress, signal });
        log.info('layers applied', r);
      },
    },
    { signal, progress },
  );
}
