import { ImageBase, type OpContext } from './image-base.js';
import { importImage, type ImportParams } from './import.js';
import { login, logout } from './login.js';
import type { ImageLookup } from './lookup.js';
import { pullImage, type PullParams } from './pull.js';
import type { ImageDetail, ImageRecord } from '../core/shapes/image.js';
import { pruneCache, rmImage } from './remove.js';

export type { ImageRecord } from './record.js';
export type { OpContext } from './image-base.js';
export type { PullParams } from './pull.js';
export type { ImportParams } from './import.js';

/**
 * Images: OCI pull → ext4, import, list, show, rm, prune-cache, registry credentials. A
 * facade: each verb lives in its own file, a function of the shared state (`ImageBase`,
 * image-base.ts):
 *
 * | verb | file |
 * | --- | --- |
 * | pull | pull.ts (resolve, then the build pipeline) |
 * | import | import.ts (a rootfs tar or directory, then the build pipeline) |
 * | the build both share | pipeline.ts |
 * | rm / prune-cache | remove.ts |
 * | registry login / logout | login.ts |
 *
 * Every build runs as named steps (reserve, stage, layers, inject, mkfs, land, record)
 * with an undo stack: on any failure or cancellation nothing is left (no staging dir, no
 * partial rootfs, no row, and no blob the failed pull added that nothing else references).
 */
export class ImageService extends ImageBase implements ImageLookup {
  /** The image named `name`; throws E_NOT_FOUND (hint: `banger image list`). */
  get(name: string): ImageRecord {
    return this.repo.get(name);
  }

  list(): ImageRecord[] {
    return this.repo.list();
  }

  show(name: string): ImageDetail {
    const r = this.repo.get(name);
    return { ...r, blobs: this.repo.blobs(name), usedBy: this.vmUsage.vmsUsingImage(name) };
  }

  /** `banger image pull`: resolve, verify and apply the image, then build its ext4. */
  pull(p: PullParams, op: OpContext = {}): Promise<ImageRecord> {
    return pullImage(this, p, op);
  }

  /** `banger image import NAME (--rootfs-tar PATH | --rootfs-dir PATH)`. */
  importImage(p: ImportParams, op: OpContext = {}): Promise<ImageRecord> {
    return importImage(this, p, op);
  }

  /** `banger image rm`: refused while a VM uses the image unless `force`. */
  rm(name: string, force = false): Promise<{ removed: string[] }> {
    return rmImage(this, name, force);
  }

  /** `banger image prune-cache` (= `banger system prune`). */
  pruneCache(): Promise<{ removed: number; freedBytes: number }> {
    return pruneCache(this);
  }

  /** `banger registry login`: verify the credentials against the registry, then store them. */
  login(p: { registry: string; username: string; password: string }, op: OpContext = {}): Promise<{ registry: string; username: string }> {
    return login(this, p, op);
  }

  logout(registry: string): { registry: string; removed: boolean } {
    return logout(this, registry);
  }
}
