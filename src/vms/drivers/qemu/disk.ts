import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { BangerError, ErrorCode } from '../../../core/errors.js';
import type { Exec } from '../../../core/exec.js';
import { toolEnv } from '../../../core/exec.js';
import { exists } from '../../../core/fsutil.js';

/**
 * The VM's root disk for QEMU: a qcow2 overlay backed by the raw base, O(1) in the image size;
 * the base is never written. An empty overlay depends only on the backing path, its format
 * and the virtual size, so the first VM of an image (and size) makes a template with qemu-img
 * in the image's cache directory (`cacheDir`, the layout's per-image cache) and every VM after
 * that gets a copy of it (a ~200 KiB file, ~1 ms instead of a ~50 ms qemu-img run). The
 * template name carries the base's size, inode and mtime, so a rebuilt image never reuses a
 * stale one; the cache directory goes with the image. When no template can be written (a
 * read-only cache), the VM's overlay is made directly.
 */
export async function qcow2Overlay(
  exec: Exec,
  qemuImg: string,
  o: { baseRootfs: string; cacheDir: string; target: string; sizeBytes?: number; signal?: AbortSignal },
): Promise<void> {
  const base = await stat(o.baseRootfs).catch((e) => {
    throw new BangerError(ErrorCode.NotFound, `image rootfs ${o.baseRootfs} is missing`, { hint: 'pull the image again', cause: e });
  });
  if (o.sizeBytes !== undefined && o.sizeBytes < base.size) {
    throw new BangerError(ErrorCode.Invalid, `--disk-size ${o.sizeBytes} bytes is smaller than the image (${base.size} bytes)`, {
      hint: 'give a size at least as large as the image, e.g. --disk-size 8G',
    });
  }
  const virtualSize = o.sizeBytes ?? base.size;
  const create = (target: string) =>
    exec([qemuImg, 'create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', o.baseRootfs, target, String(virtualSize)], { env: toolEnv(), signal: o.signal });
  const template = join(o.cacheDir, `.overlay-${virtualSize}-${base.ino}-${Math.floor(base.mtimeMs)}.qcow2`);
  try {
    if (!(await exists(template))) {
      const tmp = `${template}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
      try {
        await mkdir(o.cacheDir, { recursive: true, mode: 0o700 });
        await create(tmp);
        await rename(tmp, template);
      } catch {
        await rm(tmp, { force: true });
        // No template: make this VM's overlay directly; a real problem (a bad base, no
        // qemu-img) fails here with qemu-img's own error.
        await create(o.target);
        return;
      }
    }
    await copyFile(template, o.target);
  } catch (e) {
    await rm(o.target, { force: true });
    throw e;
  }
}
