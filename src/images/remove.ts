import { mkdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { BangerError, ErrorCode } from '../core/errors.js';
import { PullStore } from '../core/pull-store.js';
import type { ImageBase } from './image-base.js';

/** `banger image rm`: refused while a VM uses the image unless `force`. */
export async function rmImage(ib: ImageBase, name: string, force = false): Promise<{ removed: string[] }> {
  ib.repo.get(name);
  if (ib.building.has(name)) throw new BangerError(ErrorCode.InUse, `image '${name}' is being built`);
  const users = ib.vmUsage.vmsUsingImage(name);
  if (users.length && !force) {
    throw new BangerError(ErrorCode.InUse, `image '${name}' is used by VM(s): ${users.join(', ')}`, {
      hint: `remove the VMs first ('banger vm rm ${users[0]}') or pass --force`,
      details: { vms: users },
    });
  }
  const dir = ib.ctx.layout.imageDir(name);
  await mkdir(ib.ctx.layout.tmp, { recursive: true });
  const trash = join(ib.ctx.layout.tmp, `rm-image-${name}-${Date.now()}`);
  await rename(dir, trash).catch((e) => {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  });
  ib.repo.delete(name);
  await rm(trash, { recursive: true, force: true });
  await ib.prepared.remove(name); // its prepared disk goes with it (the row went with the image's)
  await rm(ib.ctx.layout.imageCacheDir(name), { recursive: true, force: true }); // VMM drivers' per-image caches
  return { removed: [name] };
}

/**
 * `banger image prune-cache` (= `banger system prune`): free blobs that no image, kernel or
 * cache entry references, and temp files of dead downloads; blobs being written are kept.
 * Also prepared disks no image names any more (superseded by a newer prepare, or left by a
 * crash) and no VM stands on.
 */
export async function pruneCache(ib: ImageBase): Promise<{ removed: number; freedBytes: number; preparedRemoved: number }> {
  const r = await ib.store.prune(PullStore.pinned(ib.ctx.layout.blobs));
  const p = await ib.prepared.pruneStale(ib.vmUsage.baseDisksInUse());
  return { removed: r.removed, freedBytes: r.freedBytes + p.freedBytes, preparedRemoved: p.removed };
}
