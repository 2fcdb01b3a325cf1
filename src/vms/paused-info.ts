import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { snapshotFiles } from './files.js';

/** A paused VM's saved state as `vm show` tells it (size on disk, when), or undefined. */
export async function pausedInfo(dir: string): Promise<{ bytes: number; at: string } | undefined> {
  const raw = await readFile(snapshotFiles(dir).meta, 'utf8').catch(() => undefined);
  if (!raw) return undefined;
  try {
    const m = JSON.parse(raw) as { bytes?: { state?: number; memory?: number }; createdAt?: string };
    return { bytes: Number(m.bytes?.state ?? 0) + Number(m.bytes?.memory ?? 0), at: String(m.createdAt ?? '') };
  } catch {
    return undefined;
  }
}

/** Bytes allocated on disk by the files of a directory (sparse files count what they hold). */
export async function du(dir: string): Promise<number> {
  let n = 0;
  for (const f of await readdir(dir).catch(() => [] as string[])) {
    const s = await stat(join(dir, f)).catch(() => undefined);
    if (s?.isFile()) n += s.blocks * 512;
  }
  return n;
}
