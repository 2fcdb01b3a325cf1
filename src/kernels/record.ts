import { KERNEL_FILES } from './files.js';
import { existsSync, statSync } from 'node:fs';
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { DB } from '../core/db.js';
import type { KernelManifest, KernelRecord } from '../core/shapes/kernel.js';

export type { KernelManifest, KernelRecord } from '../core/shapes/kernel.js';

interface KernelRow {
  name: string;
  distro: string;
  arch: string;
  kernel_version: string;
  source: string;
  vmlinux_sha256: string;
  has_initrd: number;
  has_modules: number;
  size_bytes: number;
  path: string;
  created_at: string;
}

/** Build a record from a row; file paths come from what exists in the directory. */
function fromRow(r: KernelRow): KernelRecord {
  const f = (n: string) => (existsSync(join(r.path, n)) ? join(r.path, n) : undefined);
  const modules = join(r.path, 'modules');
  return {
    name: r.name,
    distro: r.distro,
    arch: r.arch,
    kernelVersion: r.kernel_version,
    source: r.source,
    vmlinuxSha256: r.vmlinux_sha256,
    dir: r.path,
    vmlinux: f(KERNEL_FILES.vmlinux),
    vmlinuz: f(KERNEL_FILES.vmlinuz),
    initrd: r.has_initrd ? f(KERNEL_FILES.initrd) : undefined,
    modulesDir: r.has_modules && existsSync(modules) && statSync(modules).isDirectory() ? modules : undefined,
    modulesImage: f(KERNEL_FILES.modules),
    sizeBytes: r.size_bytes,
    createdAt: r.created_at,
  };
}

export function getRow(db: DB, name: string): KernelRecord | undefined {
  const r = db.prepare('SELECT * FROM kernels WHERE name = ?').get(name) as KernelRow | undefined;
  return r ? fromRow(r) : undefined;
}

export function listRows(db: DB): KernelRecord[] {
  return (db.prepare('SELECT * FROM kernels ORDER BY name').all() as KernelRow[]).map(fromRow);
}

/** Insert or replace the row for `m` installed at `dir`. Call inside the install transaction. */
export function upsertRow(db: DB, m: KernelManifest, dir: string, sizeBytes: number): void {
  db.prepare(
    `INSERT INTO kernels (name, distro, arch, kernel_version, source, vmlinux_sha256, has_initrd, has_modules, size_bytes, path, created_at)
     VALUES (@name, @distro, @arch, @kernelVersion, @source, @vmlinuxSha256, @hasInitrd, @hasModules, @sizeBytes, @path, @createdAt)
     ON CONFLICT(name) DO UPDATE SET distro = excluded.distro, arch = excluded.arch, kernel_version = excluded.kernel_version,
       source = excluded.source, vmlinux_sha256 = excluded.vmlinux_sha256, has_initrd = excluded.has_initrd,
       has_modules = excluded.has_modules, size_bytes = excluded.size_bytes, path = excluded.path, created_at = excluded.created_at`,
  ).run({
    name: m.name,
    distro: m.distro,
    arch: m.arch,
    kernelVersion: m.kernelVersion,
    source: m.source,
    vmlinuxSha256: m.vmlinuxSha256,
    hasInitrd: m.files.initrd ? 1 : 0,
    hasModules: m.files.modules ? 1 : 0,
    sizeBytes,
    path: dir,
    createdAt: m.importedAt,
  });
}

export function deleteRow(db: DB, name: string): void {
  db.prepare('DELETE FROM kernels WHERE name = ?').run(name);
}

/** Total bytes of regular files under `dir` (symlinks not followed). */
export async function dirSize(dir: string): Promise<number> {
  let total = 0;
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) total += await dirSize(p);
    else if (e.isFile()) total += (await lstat(p)).size;
  }
  return total;
}
