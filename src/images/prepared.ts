import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { DB } from '../core/db.js';
import type { ImagePrepared } from '../core/shapes/image.js';
import type { Layout } from '../core/paths.js';

/**
 * Prepared images: an image whose first boot would install systemd and an SSH server is
 * prepared once (`image prepare`, or the first `vm create` of it; the builder VM runs in the vms
 * domain, `vms/prepare.ts`) and every VM after that stands on the prepared root disk instead
 * of the base. This module keeps the record (`image_prepared`, one row per image: the current
 * disk) and the files (`layout.preparedDir(image)`); the base image is never written.
 *
 * A disk is never replaced under a VM: a new prepare (another key, or `--force`) lands under a
 * new id, and the disk it supersedes is removed at once when no VM stands on it, else by
 * `system prune` once none does (`VmUsage.baseDisksInUse`).
 */

/** A package the install added (from the guest's package database, diffed before/after). */
export type PreparedPackage = ImagePrepared['packages'][number];

/** A prepared disk's row: the wire shape `ImagePrepared` (core/shapes/image.ts) and its image. */
export type PreparedRecord = ImagePrepared & { image: string };

interface Row {
  image_name: string;
  prepare_key: string;
  disk_path: string;
  size_bytes: number;
  kernel_name: string;
  package_mirror: string | null;
  package_proxy: string | null;
  packages_json: string;
  duration_ms: number;
  prepared_at: string;
}

function toRecord(r: Row): PreparedRecord {
  return {
    image: r.image_name,
    key: r.prepare_key,
    diskPath: r.disk_path,
    sizeBytes: r.size_bytes,
    kernel: r.kernel_name,
    ...(r.package_mirror ? { packageMirror: r.package_mirror } : {}),
    ...(r.package_proxy ? { packageProxy: r.package_proxy } : {}),
    packages: JSON.parse(r.packages_json) as PreparedPackage[],
    durationMs: r.duration_ms,
    preparedAt: r.prepared_at,
  };
}

/** At most this many packages are recorded (the list comes from the guest: bounded input). */
export const MAX_PACKAGES = 5000;
const PKG_NAME = /^[A-Za-z0-9][A-Za-z0-9.+_:@-]{0,127}$/;
const PKG_VERSION = /^[A-Za-z0-9.+~:_-]{0,128}$/;

/**
 * The packages a prepare added, as the builder's first-boot script lists them ("NAME VERSION"
 * lines; Alpine's `apk info -v` gives "NAME-VERSION-rN"). Untrusted input: lines that do not look
 * like a package are dropped, at most MAX_PACKAGES are kept.
 */
export function parsePreparedPackages(text: string): PreparedPackage[] {
  const out: PreparedPackage[] = [];
  for (const line of text.slice(0, 1 << 20).split('\n')) {
    if (out.length >= MAX_PACKAGES) break;
    const parts = line.trim().split(/\s+/);
    let name = parts[0] ?? '';
    let version = parts[1] ?? '';
    if (parts.length === 1) {
      const m = /^(.+)-([^-]+-r\d+)$/.exec(name);
      if (m) [name, version] = [m[1]!, m[2]!];
    }
    if (parts.length > 2 || !PKG_NAME.test(name) || !PKG_VERSION.test(version)) continue;
    out.push({ name, version });
  }
  return out;
}

/** The `image_prepared` table and the files under `layout.prepared`. */
export class PreparedImages {
  /** Images whose prepare is running (vms/prepare.ts): prune leaves their directory alone. */
  private readonly preparing = new Set<string>();

  constructor(
    private readonly db: DB,
    private readonly layout: Pick<Layout, 'prepared' | 'preparedDir' | 'tmp'>,
  ) {}

  find(image: string): PreparedRecord | undefined {
    const r = this.db.prepare('SELECT * FROM image_prepared WHERE image_name = ?').get(image) as Row | undefined;
    return r ? toRecord(r) : undefined;
  }

  list(): PreparedRecord[] {
    return (this.db.prepare('SELECT * FROM image_prepared ORDER BY image_name').all() as Row[]).map(toRecord);
  }

  /**
   * Record `rec` as the image's current prepared disk (the file is already in place). The disk
   * it replaces is returned, for the caller to remove when no VM stands on it.
   */
  record(rec: PreparedRecord): PreparedRecord | undefined {
    const old = this.find(rec.image);
    this.db
      .prepare(
        `INSERT INTO image_prepared (image_name, prepare_key, disk_path, size_bytes, kernel_name, package_mirror, package_proxy, packages_json, duration_ms, prepared_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (image_name) DO UPDATE SET prepare_key = excluded.prepare_key, disk_path = excluded.disk_path, size_bytes = excluded.size_bytes,
           kernel_name = excluded.kernel_name, package_mirror = excluded.package_mirror, package_proxy = excluded.package_proxy,
           packages_json = excluded.packages_json, duration_ms = excluded.duration_ms, prepared_at = excluded.prepared_at`,
      )
      .run(
        rec.image,
        rec.key,
        rec.diskPath,
        rec.sizeBytes,
        rec.kernel,
        rec.packageMirror ?? null,
        rec.packageProxy ?? null,
        JSON.stringify(rec.packages),
        rec.durationMs,
        rec.preparedAt,
      );
    return old && old.diskPath !== rec.diskPath ? old : undefined;
  }

  /** Forget the image's prepared disk and remove every file of it (image rm; its VMs are gone). */
  async remove(image: string): Promise<void> {
    this.db.prepare('DELETE FROM image_prepared WHERE image_name = ?').run(image);
    const dir = this.layout.preparedDir(image);
    await mkdir(this.layout.tmp, { recursive: true });
    const trash = join(this.layout.tmp, `rm-prepared-${image}-${Date.now()}`);
    await rename(dir, trash).catch((e) => {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    });
    await rm(trash, { recursive: true, force: true });
  }

  /** Mark a prepare of `image` as running until the returned function is called. */
  begin(image: string): () => void {
    this.preparing.add(image);
    return () => void this.preparing.delete(image);
  }

  /**
   * Remove prepared disks no record names and no VM stands on (`inUse`): superseded ones, those
   * of removed images, leftovers of a crash. Images being prepared are left alone. Returns how
   * many files and bytes.
   */
  async pruneStale(inUse: Iterable<string>): Promise<{ removed: number; freedBytes: number }> {
    const keep = new Set<string>(inUse);
    for (const r of this.list()) keep.add(r.diskPath);
    let removed = 0;
    let freedBytes = 0;
    for (const image of await readdir(this.layout.prepared).catch(() => [] as string[])) {
      if (this.preparing.has(image)) continue;
      const dir = this.layout.preparedDir(image);
      const names = await readdir(dir).catch(() => [] as string[]);
      for (const n of names) {
        const p = join(dir, n);
        if (keep.has(p)) continue;
        const st = await stat(p).catch(() => undefined);
        await rm(p, { recursive: true, force: true });
        removed++;
        freedBytes += st ? st.blocks * 512 : 0;
      }
      if (names.every((n) => !keep.has(join(dir, n)))) await rm(dir, { recursive: true, force: true });
    }
    return { removed, freedBytes };
  }
}
