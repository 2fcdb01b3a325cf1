import { spawnSync } from 'node:child_process';
import { copyFileSync, createReadStream, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join, normalize } from 'node:path';
import { createHash } from 'node:crypto';
import { findPackageStanzas, parseDepends } from '../../src/kernels/debian/deb822.js';

/**
 * A local Debian archive built from real, signed data, served on 127.0.0.1 (never the internet
 * at test time):
 *   dists/bookworm/InRelease                    the host's apt copy (real Debian signature)
 *   dists/bookworm/main/binary-amd64/Packages   apt's lz4 copy, decompressed (its sha256 is in InRelease)
 *   pool/...                                    .debs at their Filename: paths, from a cache filled once by
 *                                               `apt-get download <pkg>=<version>` (see ensureDebCache)
 * Only the plain Packages exists, so the fetch code's .xz → .gz → plain fallback is exercised.
 * `tamper()` serves modified copies to test rejection.
 */

export const SUITE = 'bookworm';
export const KERNEL_META = 'linux-image-cloud-amd64';
export const BUSYBOX = 'busybox-static';
export const DEB_CACHE = process.env.BANGER_TEST_DEB_CACHE || '/var/cache/banger-test/debs';
const LISTS = '/var/lib/apt/lists';

export interface MirrorPackage {
  package: string;
  version: string;
  filename: string;
  sha256: string;
}

export interface DebianMirror {
  url: string;
  root: string;
  /** Meta package, real kernel package and busybox-static as listed in the served Packages. */
  packages: { meta: MirrorPackage; kernel: MirrorPackage; busybox: MirrorPackage };
  /** Flip one byte of an archive-relative file (e.g. "dists/bookworm/InRelease") at `offset` (negative: from the end). */
  tamper(rel: string, offset?: number): void;
  /** Undo every tamper() (restore the pristine files). */
  restore(): void;
  /** Names of requests served, for asserting what was fetched. */
  requests: string[];
  close(): Promise<void>;
}

function findList(suffix: string): string | undefined {
  if (!existsSync(LISTS)) return undefined;
  const f = readdirSync(LISTS).find((n) => n.endsWith(suffix) && !n.includes('security') && !n.includes('updates'));
  return f ? join(LISTS, f) : undefined;
}

/** Why the mirror cannot be built here (undefined when it can). Tests skip with this reason. */
export function debianMirrorUnavailable(): string | undefined {
  if (!findList(`_dists_${SUITE}_InRelease`)) return `no ${LISTS}/*_dists_${SUITE}_InRelease (run apt-get update)`;
  if (!findList(`_${SUITE}_main_binary-amd64_Packages.lz4`)) return `no ${LISTS}/*_${SUITE}_main_binary-amd64_Packages.lz4 (run apt-get update)`;
  for (const tool of ['lz4', 'gpgv', 'dpkg-deb']) {
    if (spawnSync('which', [tool]).status !== 0) return `missing tool ${tool}`;
  }
  if (!existsSync('/usr/share/keyrings/debian-archive-keyring.gpg')) return 'missing /usr/share/keyrings/debian-archive-keyring.gpg (debian-archive-keyring)';
  return cacheUnavailable();
}

function cacheUnavailable(): string | undefined {
  try {
    const pkgs = resolvePackages(loadPackages());
    const missing = Object.values(pkgs).filter((p) => !cachedDeb(p));
    if (missing.length === 0) return undefined;
    if (process.getuid?.() !== 0) return `the .deb cache ${DEB_CACHE} lacks ${missing.map((p) => p.package).join(', ')} and filling it needs root (apt-get download)`;
    if (spawnSync('which', ['apt-get']).status !== 0) return 'no apt-get to fill the .deb cache';
    return undefined;
  } catch (e) {
    return `cannot read the apt Packages list: ${(e as Error).message}`;
  }
}

let packagesCache: Buffer | undefined;
function loadPackages(): Buffer {
  if (packagesCache !== undefined) return packagesCache;
  const lz4 = findList(`_${SUITE}_main_binary-amd64_Packages.lz4`)!;
  const r = spawnSync('lz4', ['-dc', lz4], { maxBuffer: 512 * 1024 * 1024 });
  if (r.status !== 0) throw new Error(`lz4 -dc ${lz4} failed: ${r.stderr}`);
  packagesCache = r.stdout;
  return packagesCache;
}

function pkgOf(packages: Buffer, name: string, version?: string): MirrorPackage {
  const s = findPackageStanzas(packages, name).find((x) => !version || x['Version'] === version);
  if (!s) throw new Error(`${name}${version ? ' ' + version : ''} not in the Packages list`);
  return { package: name, version: s['Version']!, filename: s['Filename']!, sha256: s['SHA256']! };
}

function resolvePackages(packages: Buffer): DebianMirror['packages'] {
  const meta = pkgOf(packages, KERNEL_META);
  const metaStanza = findPackageStanzas(packages, KERNEL_META)[0]!;
  const dep = parseDepends(metaStanza['Depends']).flat().find((d) => /^linux-image-\d/.test(d.name));
  if (!dep) throw new Error(`${KERNEL_META} depends on no linux-image package`);
  return { meta, kernel: pkgOf(packages, dep.name, dep.op === '=' ? dep.version : undefined), busybox: pkgOf(packages, BUSYBOX) };
}

function sha256(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

/** Path of the cached .deb for `p` if present and matching its sha256. */
export function cachedDeb(p: MirrorPackage): string | undefined {
  const path = join(DEB_CACHE, p.filename.split('/').pop()!);
  return existsSync(path) && sha256(path) === p.sha256 ? path : undefined;
}

/**
 * Fill the .deb cache once (lazily, cached across runs). The exact command (root, cwd = cache dir):
 *   apt-get download linux-image-cloud-amd64=<v> linux-image-<abi>-cloud-amd64=<v> busybox-static=<v>
 * with the versions of the host's bookworm main Packages list (not -security/-updates).
 */
export function ensureDebCache(): DebianMirror['packages'] {
  const pkgs = resolvePackages(loadPackages());
  const missing = Object.values(pkgs).filter((p) => !cachedDeb(p));
  if (missing.length) {
    mkdirSync(DEB_CACHE, { recursive: true });
    const tmp = mkdtempSync(join(DEB_CACHE, '.dl-'));
    try {
      const r = spawnSync('apt-get', ['download', ...missing.map((p) => `${p.package}=${p.version}`)], { cwd: tmp, encoding: 'utf8', env: { ...process.env, LC_ALL: 'C' } });
      if (r.status !== 0) throw new Error(`apt-get download failed: ${r.stderr}`);
      for (const p of missing) {
        const base = p.filename.split('/').pop()!;
        // apt-get names files <pkg>_<version with ':' as %3a>_<arch>.deb; Filename: drops the epoch
        const got = readdirSync(tmp).find((n) => n.startsWith(`${p.package}_`) && n.endsWith('.deb'));
        if (!got) throw new Error(`apt-get download produced no .deb for ${p.package}`);
        if (sha256(join(tmp, got)) !== p.sha256) throw new Error(`downloaded ${got} does not match the Packages sha256`);
        renameSync(join(tmp, got), join(DEB_CACHE, base));
      }
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  }
  return pkgs;
}

/** Build the archive directory and serve it on 127.0.0.1:<random port>. */
export async function startDebianMirror(): Promise<DebianMirror> {
  const pkgs = ensureDebCache();
  const root = mkdtempSync(join(tmpdir(), 'banger-debmirror-'));
  const dists = join(root, 'dists', SUITE);
  mkdirSync(join(dists, 'main', 'binary-amd64'), { recursive: true });
  writeFileSync(join(dists, 'InRelease'), readFileSync(findList(`_dists_${SUITE}_InRelease`)!));
  writeFileSync(join(dists, 'main', 'binary-amd64', 'Packages'), loadPackages());
  for (const p of Object.values(pkgs)) {
    const dst = join(root, p.filename);
    mkdirSync(dirname(dst), { recursive: true });
    copyFileSync(cachedDeb(p)!, dst);
  }
  const pristine = new Map<string, Buffer>();
  const requests: string[] = [];
  const server: Server = createServer((req, res) => {
    const rel = normalize(decodeURIComponent((req.url ?? '/').split('?')[0]!)).replace(/^\/+/, '');
    requests.push(rel);
    const file = join(root, rel);
    if (rel.startsWith('..') || !existsSync(file) || !statSync(file).isFile()) {
      res.writeHead(404).end('not found');
      return;
    }
    res.writeHead(200, { 'content-length': statSync(file).size, 'content-type': 'application/octet-stream' });
    createReadStream(file).pipe(res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  return {
    url: `http://127.0.0.1:${port}`,
    root,
    packages: pkgs,
    requests,
    tamper(rel, offset = -100) {
      const file = join(root, rel);
      const buf = readFileSync(file);
      if (!pristine.has(rel)) pristine.set(rel, Buffer.from(buf));
      const i = offset < 0 ? buf.length + offset : offset;
      buf[i] = buf[i]! ^ 0x01;
      writeFileSync(file, buf);
    },
    restore() {
      for (const [rel, buf] of pristine) writeFileSync(join(root, rel), buf);
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
  const { mkdirSync } = await import('node:fs');
  const { join } = await import('node:path');
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
