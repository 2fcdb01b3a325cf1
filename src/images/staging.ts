import { createHash } from 'node:crypto';
import { readdir, rm, statfs } from 'node:fs/promises';
import { freemem } from 'node:os';
import { join } from 'node:path';

/**
 * Where a build unpacks its tree. Unpacking ~9k files onto a disk-backed ext4 costs seconds
 * of journal and writeback that mkfs.ext4 -d then reads back; on a tmpfs the same tree
 * lands 3-4x faster and is removed instantly. So builds stage in RAM (/dev/shm, when it is a
 * tmpfs) when the estimated tree fits in half of the free memory and of the tmpfs, else
 * under `<root>/tmp`. RAM staging dirs are named `banger-<hash of root>-…` so a daemon can
 * remove the stale ones of its own root at start (`cleanStaleRamStaging`).
 */
export const RAM_DIR = '/dev/shm';
const TMPFS_MAGIC = 0x01021994;

export function ramPrefix(root: string): string {
  return `banger-${createHash('sha256').update(root).digest('hex').slice(0, 10)}-`;
}

export async function chooseStagingParent(opts: {
  mode: 'auto' | 'ram' | 'disk';
  diskTmp: string;
  estimateBytes?: number;
  ramDir?: string;
}): Promise<{ dir: string; ram: boolean }> {
  const ramDir = opts.ramDir ?? RAM_DIR;
  if (opts.mode === 'disk' || opts.estimateBytes === undefined) return { dir: opts.diskTmp, ram: false };
  try {
    const s = await statfs(ramDir);
    if (s.type !== TMPFS_MAGIC) return { dir: opts.diskTmp, ram: false };
    const free = s.bavail * s.bsize;
    const fits = opts.mode === 'ram' ? opts.estimateBytes < free : opts.estimateBytes * 2 < Math.min(free, freemem());
    return fits ? { dir: ramDir, ram: true } : { dir: opts.diskTmp, ram: false };
  } catch {
    return { dir: opts.diskTmp, ram: false };
  }
}

/** Remove RAM staging dirs a crashed daemon of this root left behind. */
export async function cleanStaleRamStaging(root: string, ramDir = RAM_DIR): Promise<string[]> {
  const prefix = ramPrefix(root);
  const removed: string[] = [];
  for (const n of await readdir(ramDir).catch(() => [] as string[])) {
    if (!n.startsWith(prefix)) continue;
    await rm(join(ramDir, n), { recursive: true, force: true });
    removed.push(n);
  }
  return removed;
}

/** True when `e` (or a cause) is ENOSPC: the staging filesystem ran full. */
export function isNoSpace(e: unknown): boolean {
  for (let c: unknown = e, i = 0; c && i < 8; c = (c as { cause?: unknown }).cause, i++) {
    if ((c as { code?: string }).code === 'ENOSPC' || /ENOSPC|No space left/.test((c as Error).message ?? '')) return true;
  }
  return false;
}
