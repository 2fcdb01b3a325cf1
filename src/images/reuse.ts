import { createHash } from 'node:crypto';
import { link, readdir, readFile, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defaultSources } from '../guest/inject.js';

/**
 * Re-use of a built root filesystem. Two builds with the same build key (manifest digest,
 * platform, requested size, and a fingerprint of everything the guest injection writes)
 * produce the same ext4, so a warm pull of an image that another local image already built
 * hard-links that image's `rootfs.ext4` (base images are never written after the build).
 * The key is stored beside the rootfs as `build-key`.
 */
export const BUILD_KEY_FILE = 'build-key';

let fingerprint: Promise<string> | undefined;

/** sha256 over the guest injection's code, files and agent binary (computed once). */
export function injectFingerprint(): Promise<string> {
  fingerprint ??= (async () => {
    const h = createHash('sha256');
    const { filesDir, agentPath } = defaultSources();
    const codeDir = dirname(fileURLToPath(import.meta.resolve('../guest/inject.js')));
    const add = async (p: string) => {
      h.update(p.slice(p.lastIndexOf('/') + 1) + '\0');
      h.update(await readFile(p).catch(() => Buffer.from('missing')));
    };
    for (const n of (await readdir(codeDir).catch(() => [] as string[])).filter((n) => n.endsWith('.js')).sort()) await add(join(codeDir, n));
    for (const n of (await readdir(filesDir).catch(() => [] as string[])).sort()) if ((await stat(join(filesDir, n))).isFile()) await add(join(filesDir, n));
    await add(agentPath);
    return h.digest('hex');
  })();
  return fingerprint;
}

export async function buildKey(parts: { digest: string; platform: string; sizeBytes?: number }): Promise<string> {
  return createHash('sha256')
    .update(JSON.stringify({ v: 1, digest: parts.digest, platform: parts.platform, size: parts.sizeBytes ?? null, inject: await injectFingerprint() }))
    .digest('hex');
}

/**
 * Hard-link the rootfs of the first image dir among `candidates` whose build key is `key`
 * into `outDir`. Returns the size of the linked file, or undefined when none matches.
 */
export async function linkBuiltRootfs(candidates: string[], key: string, outDir: string): Promise<number | undefined> {
  for (const dir of candidates) {
    const k = await readFile(join(dir, BUILD_KEY_FILE), 'utf8').catch(() => '');
    if (k.trim() !== key) continue;
    try {
      await link(join(dir, 'rootfs.ext4'), join(outDir, 'rootfs.ext4'));
      return (await stat(join(outDir, 'rootfs.ext4'))).size;
    } catch {
      /* gone meanwhile: try the next */
    }
  }
  return undefined;
}
