import { BangerError, ErrorCode, errorMessage } from '../core/errors.js';
import { parseSize } from '../core/fsutil.js';

/** Like Promise.all, but waits for every step to finish before throwing the first failure (so the undo never races a step still writing). */
export async function settleAll<T extends readonly unknown[]>(ps: T): Promise<{ -readonly [K in keyof T]: Awaited<T[K]> }> {
  const rs = await Promise.allSettled(ps);
  const bad = rs.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (bad) throw bad.reason;
  return rs.map((r) => (r as PromiseFulfilledResult<unknown>).value) as { -readonly [K in keyof T]: Awaited<T[K]> };
}

/** Largest --disk-size / --work-disk accepted (a sparse file or qcow2 can claim any size; 16 TiB is plenty). */
export const MAX_DISK_BYTES = 16 * 1024 ** 4;

export function sizeArg(flag: string, v: string): number {
  try {
    const n = parseSize(v);
    if (n <= 0) throw new Error('must be positive');
    if (n > MAX_DISK_BYTES) throw new Error('must be at most 16T');
    return n;
  } catch (e) {
    throw new BangerError(ErrorCode.Invalid, `${flag} '${v}': ${errorMessage(e)}`, { hint: 'examples: 512M, 8G, 2GiB', details: { field: flag } });
  }
}
