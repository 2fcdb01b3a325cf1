import { constants } from 'node:fs';
import { copyFile, rm, stat, truncate } from 'node:fs/promises';
import { BangerError, ErrorCode } from '../../../core/errors.js';
import type { Exec } from '../../../core/exec.js';
import { toolEnv } from '../../../core/exec.js';

export type RawCopyMethod = 'reflink' | 'sparse';

/**
 * The VM's writable raw root disk for Firecracker (no qcow2): a reflink copy of the image's
 * base rootfs (`copyFile` with COPYFILE_FICLONE_FORCE: O(1) in the image size on XFS, btrfs)
 * where the filesystem supports it, else a sparse copy (`cp --sparse=always`: holes stay
 * holes, cost grows with the data). The base is never written. `sizeBytes` grows the copy
 * (never shrinks: E_INVALID). Partial output is removed on failure. Returns which method.
 */
export async function rawRootCopy(
  exec: Exec,
  base: string,
  target: string,
  o: { sizeBytes?: number; signal?: AbortSignal; forceSparse?: boolean } = {},
): Promise<RawCopyMethod> {
  const st = await stat(base).catch((e) => {
    throw new BangerError(ErrorCode.NotFound, `image rootfs ${base} is missing`, { hint: 'pull the image again', cause: e });
  });
  if (o.sizeBytes !== undefined && o.sizeBytes < st.size) {
    throw new BangerError(ErrorCode.Invalid, `--disk-size ${o.sizeBytes} bytes is smaller than the image (${st.size} bytes)`, {
      hint: 'give a size at least as large as the image, e.g. --disk-size 8G',
    });
  }
  let method: RawCopyMethod = 'reflink';
  try {
    try {
      if (o.forceSparse) throw new Error('sparse copy requested');
      await copyFile(base, target, constants.COPYFILE_FICLONE_FORCE);
    } catch {
      await rm(target, { force: true });
      method = 'sparse';
      await exec(['cp', '--sparse=always', '--', base, target], { env: toolEnv(), signal: o.signal });
    }
    if (o.sizeBytes !== undefined && o.sizeBytes > st.size) await truncate(target, o.sizeBytes);
    return method;
  } catch (e) {
    await rm(target, { force: true });
    throw e;
  }
}
