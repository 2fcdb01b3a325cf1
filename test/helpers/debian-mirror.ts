import { copyFileSync, linkSync, mkdirSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { parseDepends } from '../../src/kernels/debian/deb822.js';
import { findPackageStanzas } from '../../src/kernels/debian/deb822.js';
import {
  archiveSnapshot,
  archiveToolsMissing,
  dependencyClosure,
  ensurePooled,
  pkgOf,
  pooledDeb,
  SUITE,
  type ArchiveSnapshot,
  type MirrorPackage,
} from './debian-archive-cache.js';
import { createStaticServer } from './static-server.js';

/**
 * A local Debian mirror subset built from Debian's archive itself (debian-archive-cache.ts:
 * InRelease verified with gpgv, Packages.xz and every .deb checked against the signed digests),
 * laid out the way a guest's apt accepts it (HOST.md "Images and registries"):
 *   dists/bookworm/InRelease                                   Debian's own signed file
 *   dists/bookworm/main/binary-amd64/Packages.xz               as signed
 *   dists/bookworm/main/binary-amd64/by-hash/SHA256/<sha256>   the same file (apt's Acquire-By-Hash)
 *   pool/...                                                   the .debs at their Filename: paths
 * Served on 127.0.0.1 (startDebianMirror) or, as a tree, by a server inside a test's network
 * namespace (buildMirrorTree + static-server.ts). `tamper()` serves modified copies to test rejection.
 */

export { SUITE, type MirrorPackage };
export const KERNEL_META = 'linux-image-cloud-amd64';
export const BUSYBOX = 'busybox-static';
/** What the first-boot script installs on Debian (src/guest/files/banger-first-boot.sh, install_debian). */
export const FIRST_BOOT_PACKAGES = ['systemd', 'systemd-sysv', 'openssh-server', 'iproute2', 'ca-certificates'];

export interface KernelPackages {
  meta: MirrorPackage;
  kernel: MirrorPackage;
  busybox: MirrorPackage;
}

export interface DebianMirror {
  url: string;
  /** The loopback port (exposeInNetns(ns, mirror.port) makes `url` work inside a namespace). */
  port: number;
  root: string;
  /** Meta package, real kernel package and busybox-static as listed in the served Packages. */
  packages: KernelPackages;
  /** Flip one byte of an archive-relative file (e.g. "dists/bookworm/InRelease") at `offset` (negative: from the end). */
  tamper(rel: string, offset?: number): void;
  /** Undo every tamper() (restore the pristine files). */
  restore(): void;
  /** Names of requests served, for asserting what was fetched. */
  requests: string[];
  close(): Promise<void>;
}

/**
 * Why the mirror cannot be built here: a missing tool or keyring only. A mirror that cannot be
 * reached is not a reason to skip: the setup then fails, naming the URL.
 */
export function debianMirrorUnavailable(): string | undefined {
  return archiveToolsMissing();
}

function kernelPackages(packages: Buffer): KernelPackages {
  const need = (p: MirrorPackage | undefined, what: string) => {
    if (!p) throw new Error(`${what} is not in the ${SUITE} Packages index`);
    return p;
  };
  const meta = need(pkgOf(packages, KERNEL_META), KERNEL_META);
  const metaStanza = findPackageStanzas(packages, KERNEL_META)[0]!;
  const dep = parseDepends(metaStanza['Depends'])
    .flat()
    .find((d) => /^linux-image-\d/.test(d.name));
  if (!dep) throw new Error(`${KERNEL_META} depends on no linux-image package`);
  return { meta, kernel: need(pkgOf(packages, dep.name, dep.op, dep.version), dep.name), busybox: need(pkgOf(packages, BUSYBOX), BUSYBOX) };
}

/** Path of the pooled, verified .deb for `p` (undefined when it is not cached). */
export function cachedDeb(p: MirrorPackage): string | undefined {
  return pooledDeb(p);
}

/** Download (once, verified) the kernel meta package, the kernel and busybox-static; returns their refs. */
export async function ensureDebCache(): Promise<KernelPackages> {
  const snap = await archiveSnapshot();
  const pkgs = kernelPackages(snap.packages);
  await ensurePooled(snap, Object.values(pkgs));
  return pkgs;
}

function place(src: string, dst: string): void {
  mkdirSync(dirname(dst), { recursive: true });
  try {
    linkSync(src, dst); // tamper() replaces files instead of writing through, so the cache stays pristine
  } catch {
    copyFileSync(src, dst);
  }
}

/**
 * Build the mirror tree in a new temp directory: the kernel packages, plus (install: true) the
 * dependency closure of FIRST_BOOT_PACKAGES so a bare bookworm guest can install from it.
 */
export async function buildMirrorTree(
  opts: { install?: boolean } = {},
): Promise<{ root: string; packages: KernelPackages; debs: MirrorPackage[]; snapshot: ArchiveSnapshot }> {
  const snap = await archiveSnapshot();
  const packages = kernelPackages(snap.packages);
  const debs = [...Object.values(packages), ...(opts.install ? dependencyClosure(snap.packages, FIRST_BOOT_PACKAGES) : [])];
  await ensurePooled(snap, debs);
  const root = mkdtempSync(join(tmpdir(), 'banger-debmirror-'));
  const dists = join(root, 'dists', SUITE);
  place(join(snap.dir, 'InRelease'), join(dists, 'InRelease'));
  place(join(snap.dir, 'main/binary-amd64/Packages.xz'), join(dists, 'main/binary-amd64/Packages.xz'));
  place(join(snap.dir, 'main/binary-amd64/Packages.xz'), join(dists, 'main/binary-amd64/by-hash/SHA256', snap.packagesXzSha256));
  for (const p of debs) place(pooledDeb(p)!, join(root, p.filename));
  return { root, packages, debs, snapshot: snap };
}

/** Build the archive directory and serve it on 127.0.0.1:<random port>. */
export async function startDebianMirror(opts: { install?: boolean } = {}): Promise<DebianMirror> {
  const { root, packages } = await buildMirrorTree(opts);
  const pristine = new Map<string, Buffer>();
  const requests: string[] = [];
  const server: Server = createStaticServer(root, (rel) => requests.push(rel));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  const rewrite = (rel: string, buf: Buffer) => {
    unlinkSync(join(root, rel)); // never write through a hard link into the cache
    writeFileSync(join(root, rel), buf);
  };
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    root,
    packages,
    requests,
    tamper(rel, offset = -100) {
      const buf = readFileSync(join(root, rel));
      if (!pristine.has(rel)) pristine.set(rel, Buffer.from(buf));
      const i = offset < 0 ? buf.length + offset : offset;
      buf[i] = buf[i]! ^ 0x01;
      rewrite(rel, buf);
    },
    restore() {
      for (const [rel, buf] of pristine) rewrite(rel, buf);
      pristine.clear();
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      rmSync(root, { recursive: true, force: true });
    },
  };
}

/**
 * Fetch the Debian cloud kernel + banger initramfs from `mirror` into `<dir>/kernel` (scratch in
 * `<dir>/tmp`) through the real verified chain, for tests that boot guests without the daemon.
 */
export async function fetchTestKernel(dir: string, mirror: DebianMirror): Promise<string> {
  const { fetchDebianKernel } = await import('../../src/kernels/debian/fetch.js');
  const { exec } = await import('../../src/core/exec.js');
  const { nullLogger } = await import('../../src/core/log.js');
  const kernelDir = join(dir, 'kernel');
  mkdirSync(kernelDir, { recursive: true });
  mkdirSync(join(dir, 'tmp'), { recursive: true });
  await fetchDebianKernel({
    entry: { name: 'debian-cloud-amd64', kind: 'debian', distro: 'debian', arch: 'x86_64', package: KERNEL_META, suite: SUITE, description: '' },
    mirror: mirror.url,
    keyring: '/usr/share/keyrings/debian-archive-keyring.gpg',
    outDir: kernelDir,
    tmpDir: join(dir, 'tmp'),
    exec,
    log: nullLogger,
  });
  return kernelDir;
}
