import { readdir, readFile } from 'node:fs/promises';
import type { Layout } from '../core/paths.js';
import { parseMeta } from './drivers/snapshot-meta.js';
import type { SnapshotFiles, SnapshotMeta } from './drivers/types.js';
import { snapshotFiles } from './files.js';
import type { WarmInfo, WarmSnapshot } from '../core/shapes/image.js';
import { du } from './paused-info.js';

export type { WarmInfo, WarmSnapshot } from '../core/shapes/image.js';

/** The shape a warm snapshot is for, as a directory name (kernel names are `Name`s: safe). */
export function warmKey(s: { vmm: string; kernel: string; vcpu: number; memoryMiB: number }): string {
  return `${s.vmm}-${s.kernel}-${s.vcpu}cpu-${s.memoryMiB}m`;
}

/** `warm.json` of a snapshot directory, and its `snapshot.json`; undefined when either is missing or unreadable. */
export async function readWarm(dir: string, infoFile = 'warm.json'): Promise<{ info: WarmInfo; meta: SnapshotMeta; files: SnapshotFiles } | undefined> {
  const files = snapshotFiles(dir);
  try {
    const info = JSON.parse(await readFile(`${dir}/${infoFile}`, 'utf8')) as WarmInfo;
    const meta = parseMeta(JSON.parse(await readFile(files.meta, 'utf8')));
    if (typeof info.image !== 'string' || typeof info.shape !== 'string') return undefined;
    return { info, meta, files };
  } catch {
    return undefined;
  }
}

/** Every complete warm snapshot of `image` (temp directories of a warm in progress are skipped). */
export async function listWarm(layout: Layout, image: string): Promise<WarmSnapshot[]> {
  const out: WarmSnapshot[] = [];
  for (const d of await readdir(layout.warmDir(image)).catch(() => [] as string[])) {
    if (d.includes('.tmp-')) continue;
    const w = await readWarm(`${layout.warmDir(image)}/${d}`);
    if (w) out.push({ ...w.info, dir: w.files.dir, bytes: { ...w.meta.bytes, allocated: await du(w.files.dir) } });
  }
  return out;
}
