import { rm, stat, truncate } from 'node:fs/promises';
import { BangerError, ErrorCode } from '../core/errors.js';
import type { Exec } from '../core/exec.js';
import { toolEnv } from '../core/exec.js';

/**
 * A writable raw copy of a base rootfs for VMMs without qcow2 (Firecracker): a reflink when
 * the filesystem supports it (O(1) in the image size: XFS, btrfs), else a sparse copy
 * (`cp --sparse=always`, cost grows with the data in the image). The base is never written.
 * `sizeBytes` grows the copy (the guest still has to resize2fs). Partial output is removed.
 */
export async function rawCowCopy(exec: Exec, base: string, target: string, o: { sizeBytes?: number; signal?: AbortSignal } = {}): Promise<'reflink' | 'sparse'> {
  const st = await stat(base);
  if (o.sizeBytes !== undefined && o.sizeBytes < st.size) {
    throw new BangerError(ErrorCode.Invalid, `--disk-size ${o.sizeBytes} bytes is smaller than the image (${st.size} bytes)`, { hint: 'give a size at least as large as the image, e.g. --disk-size 8G' });
  }
  let method: 'reflink' | 'sparse' = 'reflink';
  try {
    const r = await exec(['cp', '--reflink=always', base, target], { env: toolEnv(), allowFailure: true, signal: o.signal });
    if (r.exitCode !== 0) {
      await rm(target, { force: true });
      method = 'sparse';
      await exec(['cp', '--sparse=always', base, target], { env: toolEnv(), signal: o.signal });
    }
    if (o.sizeBytes !== undefined) await truncate(target, o.sizeBytes);
    return method;
  } catch (e) {
    await rm(target, { force: true });
    throw e;
  }
}
