import { randomBytes } from 'node:crypto';
import { existsSync, renameSync } from 'node:fs';
import { chmod, mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { BangerError, ErrorCode, throwIfAborted } from '../core/errors.js';
import { sha256File, writeJsonAtomic } from '../core/fsutil.js';
import type { Context } from '../core/context.js';
import { ContentStore } from '../core/content-store.js';
import type { BundleFiles } from './extract.js';
import { buildModulesImage, MODULES_IMAGE } from './modimage.js';
import { dirSize, getRow, upsertRow, type KernelManifest, type KernelRecord } from './record.js';

/**
 * Land a staged kernel: write `manifest.json` into `staging`, then in ONE SQLite transaction
 * move any old `kernelDir(name)` aside, rename `staging` into place and upsert the row. If any
 * step throws, the renames are reversed and the transaction rolls back, so the old kernel (if
 * any) is intact. The old directory is deleted only after the commit. The content-store blobs
 * it came from are recorded as the kernel's references (`blob_refs`) in the same transaction.
 */
export async function installKernel(
  ctx: Context,
  staging: string,
  meta: Omit<KernelManifest, 'vmlinuxSha256' | 'importedAt' | 'files'>,
  files: BundleFiles,
  signal?: AbortSignal,
  /** Content-store blobs this kernel came from (sha256:<hex>), recorded with the row. */
  blobs: string[] = [],
): Promise<KernelRecord> {
  const image = files.vmlinux ?? files.vmlinuz;
  if (!image) throw new BangerError(ErrorCode.Bundle, `kernel ${meta.name}: no vmlinux or vmlinuz`);
  // A module tree (bundle modules/, kernel import --modules) becomes the guests' modules disk too;
  // the Debian path has already written it.
  if (files.modulesDir && !existsSync(join(staging, MODULES_IMAGE))) {
    await buildModulesImage(ctx.exec, files.modulesDir, join(staging, MODULES_IMAGE), { release: meta.kernelVersion, signal });
  }
  const manifest: KernelManifest = {
    ...meta,
    vmlinuxSha256: await sha256File(image),
    importedAt: new Date().toISOString(),
    files: {
      vmlinux: !!files.vmlinux,
      vmlinuz: !!files.vmlinuz,
      initrd: !!files.initrd,
      modules: !!files.modulesDir || existsSync(join(staging, MODULES_IMAGE)),
    },
  };
  await writeJsonAtomic(join(staging, 'manifest.json'), manifest);
  await chmod(staging, 0o755); // mkdtemp made it 0700; kernels are readable like /boot
  const size = await dirSize(staging);
  throwIfAborted(signal);
  const target = ctx.layout.kernelDir(meta.name);
  await mkdir(ctx.layout.kernels, { recursive: true });
  const trash = join(ctx.layout.tmp, `kernel-${meta.name}-old-${randomBytes(4).toString('hex')}`);
  const store = new ContentStore(ctx.layout, ctx.db);
  ctx.db.transaction(() => {
    const moved = existsSync(target);
    if (moved) renameSync(target, trash);
    try {
      renameSync(staging, target);
      try {
        upsertRow(ctx.db, manifest, target, size);
        store.dropRefs('kernel', meta.name);
        store.addRefs('kernel', meta.name, blobs);
      } catch (e) {
        renameSync(target, staging);
        throw e;
      }
    } catch (e) {
      if (moved) renameSync(trash, target);
      throw e;
    }
  })();
  await rm(trash, { recursive: true, force: true });
  return getRow(ctx.db, meta.name)!;
}
