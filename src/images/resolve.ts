import { readFile } from 'node:fs/promises';
import { BangerError, ErrorCode } from '../core/errors.js';
import { manifestRef, type ImageReference } from './reference.js';
import { sha256, type RegistryClient } from './registry/client.js';
import { extractConfig, formatPlatform, parseManifest, parsePlatform, selectPlatform, type ImageConfig, type ImageManifest, type Platform } from './registry/manifest.js';
import type { BlobStore } from './store.js';

export interface ResolvedImage {
  manifest: ImageManifest;
  /** Digest of the platform manifest (what the image record stores). */
  manifestDigest: string;
  rawConfig: Buffer;
  config: ImageConfig;
}

/**
 * Reference → verified platform manifest + image config. An index is narrowed to `want`
 * (E_PLATFORM lists what exists); a single-platform image whose config names another
 * platform is refused the same way. The config blob comes from the store when present
 * (re-verified), else it is downloaded, verified and stored.
 */
export async function resolveImage(client: RegistryClient, store: BlobStore, ref: ImageReference, want: Platform): Promise<ResolvedImage> {
  const top = await client.manifest(manifestRef(ref));
  let parsed = parseManifest(top.body, top.contentType, ref.canonical);
  let manifestDigest = top.digest;
  const fromIndex = parsed.kind === 'index';
  if (parsed.kind === 'index') {
    const desc = selectPlatform(parsed.index, want, ref.canonical);
    const m = await client.manifest(desc.digest);
    parsed = parseManifest(m.body, m.contentType, `${ref.canonical} (${formatPlatform(want)})`);
    manifestDigest = m.digest;
    if (parsed.kind !== 'manifest') throw new BangerError(ErrorCode.Registry, `${ref.canonical}: the index entry for ${formatPlatform(want)} is itself an index`);
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
      throw new BangerError(ErrorCode.Platform, `${ref.canonical} is for ${os}/${cfg.architecture}${cfg.variant ? '/' + cfg.variant : ''}, not ${formatPlatform(want)}; available: ${os}/${cfg.architecture}`, {
        hint: `pass --platform ${os}/${cfg.architecture}`,
      });
    }
  }
  return { manifest, manifestDigest, rawConfig, config: cfg.config };
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
