import { readFile } from 'node:fs/promises';
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
