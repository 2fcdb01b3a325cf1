import { readFile } from 'node:fs/promises';
import { BangerError, ErrorCode } from '../core/errors.js';
import { manifestRef, type ImageReference } from './reference.js';
import { sha256, type RegistryClient } from './registry/client.js';
import {
  extractConfig,
  formatPlatform,
  parseManifest,
  parsePlatform,
  selectPlatform,
  type ImageConfig,
  type ImageManifest,
  type Platform,
} from './registry/manifest.js';
import type { BlobStore } from './store.js';

export interface ResolvedImage {
  manifest: ImageManifest;
  /** Digest of the platform manifest (what the image record stores). */
  manifestDigest: string;
  /** The manifests kept in the content store (the index, when there is one, and the platform manifest). */
  manifestBlobs: string[];
  rawConfig: Buffer;
  config: ImageConfig;
}

/**
 * Reference → verified platform manifest + image config. An index is narrowed to `want`
 * (E_PLATFORM lists what exists); a single-platform image whose config names another
 * platform is refused the same way. The config blob comes from the store when present
 * (re-verified), else it is downloaded, verified and stored. Manifests are kept in the store
 * too; one asked for by digest (an index's platform entry, or `name@sha256:…`) is taken from
 * the store when a verified copy is there, so only a tag is asked of the registry each time.
 */
export async function resolveImage(client: RegistryClient, store: BlobStore, ref: ImageReference, want: Platform): Promise<ResolvedImage> {
  const topRef = manifestRef(ref);
  const top = (await storedManifest(store, topRef)) ?? (await client.manifest(topRef));
  await keepManifest(store, top.digest, top.body);
  const manifestBlobs = [top.digest];
  let parsed = parseManifest(top.body, top.contentType, ref.canonical);
  let manifestDigest = top.digest;
  const fromIndex = parsed.kind === 'index';
  if (parsed.kind === 'index') {
    const desc = selectPlatform(parsed.index, want, ref.canonical);
    const m = (await storedManifest(store, desc.digest, desc.mediaType)) ?? (await client.manifest(desc.digest));
    await keepManifest(store, m.digest, m.body);
    manifestBlobs.push(m.digest);
    parsed = parseManifest(m.body, m.contentType, `${ref.canonical} (${formatPlatform(want)})`);
    manifestDigest = m.digest;
    if (parsed.kind !== 'manifest')
      throw new BangerError(ErrorCode.Registry, `${ref.canonical}: the index entry for ${formatPlatform(want)} is itself an index`);
  }
  const manifest = parsed.manifest;
  const rawConfig = await configBlob(client, store, manifest);
  let cfgJson: unknown;
  try {
    cfgJson = JSON.parse(rawConfig.toString('utf8'));
  } catch (e) {
    throw new BangerError(ErrorCode.Registry, `${ref.canonical}: image config ${manifest.config.digest} is not valid JSON`, { cause: e });
  }
  const cfg = extractConfig(cfgJson);
  if (cfg.architecture && !fromIndex) {
    // a single-platform image: its config says what it is
    const os = cfg.os ?? 'linux';
    const arch = parsePlatform(`${os}/${cfg.architecture}`).architecture;
    if (arch !== want.architecture || os !== want.os) {
      throw new BangerError(
        ErrorCode.Platform,
        `${ref.canonical} is for ${os}/${cfg.architecture}${cfg.variant ? '/' + cfg.variant : ''}, not ${formatPlatform(want)}; available: ${os}/${cfg.architecture}`,
        {
          hint: `pass --platform ${os}/${cfg.architecture}`,
        },
      );
    }
  }
  return { manifest, manifestDigest, manifestBlobs, rawConfig, config: cfg.config };
}

/** A manifest asked for by digest, from the store when a copy there verifies (else undefined). */
async function storedManifest(
  store: BlobStore,
  reference: string,
  contentType?: string,
): Promise<{ body: Buffer; digest: string; contentType?: string } | undefined> {
  if (!/^sha256:[a-f0-9]{64}$/.test(reference)) return undefined; // a tag: always asked of the registry
  return store.withLock(reference, async () => {
    if (!(await store.has(reference))) return undefined;
    const body = await readFile(store.path(reference));
    if (sha256(body) === reference) return { body, digest: reference, contentType };
    await store.remove(reference); // damaged: fetched again
    return undefined;
  });
}

/** Store a verified manifest under its digest (no-op when an intact copy is there). */
async function keepManifest(store: BlobStore, digest: string, body: Buffer): Promise<void> {
  await store.withLock(digest, async () => {
    if (await store.has(digest)) {
      if (sha256(await readFile(store.path(digest))) === digest) return;
      await store.remove(digest);
    }
    const w = await store.writer({ digest, size: body.length });
    w.write(body);
    await w.commit();
  });
}

async function configBlob(client: RegistryClient, store: BlobStore, manifest: ImageManifest): Promise<Buffer> {
  const d = manifest.config;
  return store.withLock(d.digest, async () => {
    if (await store.has(d.digest)) {
      const b = await readFile(store.path(d.digest));
      if (sha256(b) === d.digest && b.length === d.size) return b;
      await store.remove(d.digest);
    }
    const b = await client.smallBlob(d);
    const w = await store.writer(d);
    w.write(b);
    await w.commit();
    return b;
  });
}
