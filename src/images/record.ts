import { BangerError, ErrorCode } from '../core/errors.js';
import type { DB } from '../core/db.js';
import type { ImageConfig, ImageRecord } from '../core/shapes/image.js';

export type { ImageRecord } from '../core/shapes/image.js';

interface Row {
  name: string;
  source_ref: string;
  digest: string;
  platform: string;
  config_json: string;
  size_bytes: number;
  kernel_ref: string | null;
  rootfs_path: string;
  from_registry: number;
  created_at: string;
}

function toRecord(r: Row): ImageRecord {
  return {
    name: r.name,
    sourceRef: r.source_ref,
    digest: r.digest,
    platform: r.platform,
    config: JSON.parse(r.config_json) as ImageConfig,
    sizeBytes: r.size_bytes,
    kernelRef: r.kernel_ref,
    rootfsPath: r.rootfs_path,
    fromRegistry: r.from_registry === 1,
    createdAt: r.created_at,
  };
}

/** The `images` and `image_blobs` tables. */
export class ImageRepo {
  constructor(private readonly db: DB) {}

  find(name: string): ImageRecord | undefined {
    const r = this.db.prepare('SELECT * FROM images WHERE name = ?').get(name) as Row | undefined;
    return r ? toRecord(r) : undefined;
  }

  /** Throws E_NOT_FOUND with the hint `banger image list`. */
  get(name: string): ImageRecord {
    const r = this.find(name);
    if (!r) throw new BangerError(ErrorCode.NotFound, `image '${name}' not found`, { hint: "see 'banger image list'" });
    return r;
  }

  list(): ImageRecord[] {
    return (this.db.prepare('SELECT * FROM images ORDER BY name').all() as Row[]).map(toRecord);
  }

  /** Insert the image and its blob references in one transaction. */
  insert(rec: ImageRecord, blobs: string[]): void {
    this.db.transaction(() => {
      this.db
        .prepare(
          'INSERT INTO images (name, source_ref, digest, platform, config_json, size_bytes, kernel_ref, rootfs_path, from_registry, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
        )
        .run(
          rec.name,
          rec.sourceRef,
          rec.digest,
          rec.platform,
          JSON.stringify(rec.config),
          rec.sizeBytes,
          rec.kernelRef,
          rec.rootfsPath,
          rec.fromRegistry ? 1 : 0,
          rec.createdAt,
        );
      const ins = this.db.prepare('INSERT OR IGNORE INTO image_blobs (image_name, digest) VALUES (?, ?)');
      for (const b of blobs) ins.run(rec.name, b);
    })();
  }

  delete(name: string): void {
    this.db.transaction(() => {
      this.db.prepare('DELETE FROM image_blobs WHERE image_name = ?').run(name);
      this.db.prepare('DELETE FROM images WHERE name = ?').run(name);
    })();
  }

  blobs(name: string): string[] {
    return (this.db.prepare('SELECT digest FROM image_blobs WHERE image_name = ? ORDER BY digest').all(name) as { digest: string }[]).map((r) => r.digest);
  }

  referencedBlobs(): Set<string> {
    return new Set((this.db.prepare('SELECT DISTINCT digest FROM image_blobs').all() as { digest: string }[]).map((r) => r.digest));
  }
}
