import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { verifyInRelease } from '../../src/kernels/debian/archive.js';
import { download, mirrorUrl } from '../../src/kernels/debian/download.js';
import { compareDebVersions, findPackageStanzas, parseDepends, parseRelease, satisfies, type Stanza } from '../../src/kernels/debian/deb822.js';
import { exec } from '../../src/core/exec.js';

/**
 * A verified snapshot of Debian's archive for tests, fetched at setup the way apt does it and
 * cached under /var/cache/banger-test/debian-archive (BANGER_TEST_CACHE overrides the root):
 *
 *   1. dists/bookworm/InRelease from the configured mirror (BANGER_DEBIAN_MIRROR, else the
 *      host's apt sources, else http://deb.debian.org/debian), verified with gpgv against
 *      debian-archive-keyring (src/kernels/debian/archive.ts: verifyInRelease);
 *   2. main/binary-amd64/Packages.xz, its size and sha256 checked against the signed InRelease;
 *   3. each .deb a test needs, resolved in that Packages (dependencies included) and checked
 *      against its SHA256 and Size there, stored at its Filename: path in a shared pool.
 *
 * A snapshot is reused for a day (no network at all on a warm run); after that InRelease is
 * fetched again (a failure then keeps the old snapshot and says so). Every network step has a
 * timeout (BANGER_TEST_FETCH_TIMEOUT_MS, default 5 min per file) and fails naming the URL.
 * Nothing is parsed that gpgv did not verify or a signed digest does not cover.
 */

export const SUITE = 'bookworm';
export const KEYRING = '/usr/share/keyrings/debian-archive-keyring.gpg';
const ROOT = join(process.env.BANGER_TEST_CACHE || '/var/cache/banger-test', 'debian-archive');
const PACKAGES_XZ = 'main/binary-amd64/Packages.xz';
const MAX_AGE_MS = 24 * 3600_000;
const FETCH_MS = Number(process.env.BANGER_TEST_FETCH_TIMEOUT_MS || 300_000);

export interface MirrorPackage {
  package: string;
  version: string;
  filename: string;
  sha256: string;
  size: number;
}

export interface ArchiveSnapshot {
  /** Directory holding InRelease and main/binary-amd64/Packages.xz exactly as the archive signed them. */
  dir: string;
  /** The mirror it came from. */
  mirror: string;
  /** sha256 of Packages.xz (its by-hash name). */
  packagesXzSha256: string;
  /** The decompressed Packages index. */
  packages: Buffer;
}

/** The Debian mirror tests fetch from: BANGER_DEBIAN_MIRROR, the host's apt sources for bookworm, or deb.debian.org. */
export function configuredMirror(): string {
  if (process.env.BANGER_DEBIAN_MIRROR) return process.env.BANGER_DEBIAN_MIRROR;
  const texts: string[] = [];
  for (const f of ['/etc/apt/sources.list', ...listDir('/etc/apt/sources.list.d').map((n) => join('/etc/apt/sources.list.d', n))]) {
    if (/\.(list|sources)$/.test(f) && existsSync(f)) texts.push(readFileSync(f, 'utf8'));
  }
  for (const t of texts) {
    // one-line format: deb [opts] URI bookworm main
    const one = /^deb\s+(?:\[[^\]]*\]\s+)?(https?:\/\/\S+)\s+bookworm\s/m.exec(t);
    if (one && !/security/.test(one[1]!)) return one[1]!;
    // deb822 format: a stanza whose Suites include bookworm
    for (const stanza of t.split(/\n\s*\n/)) {
      const uri = /^URIs:\s*(https?:\/\/\S+)/m.exec(stanza)?.[1];
      if (uri && !/security/.test(uri) && /^Suites:.*\bbookworm\b/m.test(stanza) && !/^Enabled:\s*no/im.test(stanza)) return uri;
    }
  }
  return 'http://deb.debian.org/debian';
}

function listDir(d: string): string[] {
  try {
    return readdirSync(d);
  } catch {
    return [];
  }
}

/** Why a snapshot cannot be made here (a missing tool or keyring), or undefined. */
export function archiveToolsMissing(): string | undefined {
  for (const tool of ['gpgv', 'xz', 'dpkg-deb']) if (spawnSync('which', [tool]).status !== 0) return `missing tool ${tool}`;
  if (!existsSync(KEYRING)) return `missing ${KEYRING} (debian-archive-keyring)`;
  return undefined;
}

/** download() with a deadline: a stall fails naming the URL instead of hanging the run. */
async function fetchTo(url: string, target: string, what: string, check: { sha256?: string; size?: number } = {}): Promise<void> {
  const signal = AbortSignal.timeout(FETCH_MS);
  try {
    await download(url, target, { what, signal, ...check });
  } catch (e) {
    if (signal.aborted) throw new Error(`test setup stalled: fetching ${what} from ${url} took longer than ${FETCH_MS / 1000} s`);
    throw e;
  }
}

function sha256(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

let memo: Promise<ArchiveSnapshot> | undefined;

/** The current verified snapshot (fetched when missing or older than a day). */
export function archiveSnapshot(): Promise<ArchiveSnapshot> {
  memo ??= loadSnapshot();
  return memo;
}

async function loadSnapshot(): Promise<ArchiveSnapshot> {
  mkdirSync(ROOT, { recursive: true });
  const currentFile = join(ROOT, 'current.json');
  let current: { dir: string; mirror: string; fetchedAt: number } | undefined;
  try {
    current = JSON.parse(readFileSync(currentFile, 'utf8'));
    if (!existsSync(join(ROOT, current!.dir, 'InRelease'))) current = undefined;
  } catch {
    current = undefined;
  }
  const mirror = configuredMirror();
  if (!current || Date.now() - current.fetchedAt > MAX_AGE_MS || current.mirror !== mirror) {
    try {
      current = { dir: await fetchSnapshot(mirror), mirror, fetchedAt: Date.now() };
      const tmp = `${currentFile}.${process.pid}.tmp`;
      writeFileSync(tmp, JSON.stringify(current));
      renameSync(tmp, currentFile);
    } catch (e) {
      if (!current) throw e;
      process.stderr.write(
        `warning: could not refresh the Debian archive snapshot from ${mirror} (${(e as Error).message}); using the one from ${new Date(current.fetchedAt).toISOString()}\n`,
      );
    }
  }
  const dir = join(ROOT, current.dir);
  // Re-verify what is served (cheap, and a damaged cache must not pass silently).
  const text = await verifyInRelease(join(dir, 'InRelease'), { keyring: KEYRING, url: `${dir}/InRelease`, outFile: join(dir, `.signed.${process.pid}`), exec });
  const want = parseRelease(text).sha256.get(PACKAGES_XZ)!;
  const xz = join(dir, PACKAGES_XZ);
  if (sha256(xz) !== want.sha256) throw new Error(`cached ${xz} does not match its InRelease; remove ${dir}`);
  const r = spawnSync('xz', ['-dc', xz], { maxBuffer: 1024 * 1024 * 1024 });
  if (r.status !== 0) throw new Error(`xz -dc ${xz} failed: ${r.stderr}`);
  return { dir, mirror: current.mirror, packagesXzSha256: want.sha256, packages: r.stdout };
}

/** Fetch and verify InRelease + Packages.xz into ROOT/snap-<sha12 of InRelease>; returns that name. */
async function fetchSnapshot(mirror: string): Promise<string> {
  const work = join(ROOT, `.fetch-${process.pid}-${Date.now()}`);
  mkdirSync(work, { recursive: true });
  try {
    const inUrl = mirrorUrl(mirror, `dists/${SUITE}/InRelease`);
    await fetchTo(inUrl, join(work, 'InRelease'), 'InRelease');
    const text = await verifyInRelease(join(work, 'InRelease'), { keyring: KEYRING, url: inUrl, outFile: join(work, 'Release.signed'), exec });
    const rel = parseRelease(text);
    if (rel.fields['Codename'] !== SUITE) throw new Error(`${inUrl} is signed for codename ${rel.fields['Codename']}, not ${SUITE}`);
    const xz = rel.sha256.get(PACKAGES_XZ);
    if (!xz) throw new Error(`${inUrl} lists no ${PACKAGES_XZ}`);
    await fetchTo(mirrorUrl(mirror, `dists/${SUITE}/${PACKAGES_XZ}`), join(work, PACKAGES_XZ), PACKAGES_XZ, { sha256: xz.sha256, size: xz.size });
    const name = `snap-${sha256(join(work, 'InRelease')).slice(0, 12)}`;
    if (!existsSync(join(ROOT, name))) renameSync(work, join(ROOT, name));
    return name;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** The highest-versioned stanza of `name` satisfying `op version`, as a MirrorPackage. */
export function pkgOf(packages: Buffer, name: string, op?: string, version?: string): MirrorPackage | undefined {
  const s = findPackageStanzas(packages, name)
    .filter((x) => x['Version'] && satisfies(x['Version'], op, version))
    .sort((a, b) => compareDebVersions(b['Version']!, a['Version']!))[0];
  return s ? toRef(s) : undefined;
}

function toRef(s: Stanza): MirrorPackage {
  return { package: s['Package']!, version: s['Version']!, filename: s['Filename']!, sha256: s['SHA256']!.toLowerCase(), size: Number(s['Size']) };
}

/** Names of real packages that `Provides:` the virtual package `name`. */
function providers(packages: Buffer, name: string): string[] {
  const out: string[] = [];
  for (let i = packages.indexOf('\nProvides: '); i >= 0; i = packages.indexOf('\nProvides: ', i + 1)) {
    const end = packages.indexOf('\n', i + 1);
    const line = packages.toString('utf8', i + 11, end);
    if (!line.split(',').some((p) => p.trim().split(/[\s(]/)[0] === name)) continue;
    const start = packages.lastIndexOf('\n\n', i);
    const m = /^Package: (\S+)/m.exec(packages.toString('utf8', start < 0 ? 0 : start + 2, i + 1));
    if (m) out.push(m[1]!);
  }
  return out;
}

/**
 * `roots` and everything they need (Depends and Pre-Depends, every alternative that exists,
 * virtual packages through Provides), as apt would choose on a system that has nothing:
 * a superset of what a guest's `apt-get install --no-install-recommends` fetches.
 */
export function dependencyClosure(packages: Buffer, roots: string[]): MirrorPackage[] {
  const picked = new Map<string, MirrorPackage>();
  const queue = [...roots];
  while (queue.length) {
    const name = queue.shift()!;
    if (picked.has(name)) continue;
    const stanza = findPackageStanzas(packages, name).sort((a, b) => compareDebVersions(b['Version']!, a['Version']!))[0];
    if (!stanza) throw new Error(`package ${name} is not in the ${SUITE} Packages index`);
    picked.set(name, toRef(stanza));
    for (const group of [...parseDepends(stanza['Pre-Depends']), ...parseDepends(stanza['Depends'])]) {
      // every real alternative: the guest's apt may prefer one it already has
      const real = group.filter((d) => picked.has(d.name) || pkgOf(packages, d.name, d.op, d.version)).map((d) => d.name);
      const choice = real.length
        ? real
        : group
            .map((d) => providers(packages, d.name)[0])
            .filter((n): n is string => !!n)
            .slice(0, 1);
      if (!choice.length) throw new Error(`nothing in ${SUITE} satisfies '${group.map((d) => d.name).join(' | ')}' (needed by ${name})`);
      queue.push(...choice);
    }
  }
  return [...picked.values()];
}

/** Path of `p` in the shared pool when present and matching its sha256. */
export function pooledDeb(p: MirrorPackage): string | undefined {
  const path = join(ROOT, p.filename);
  return existsSync(path) && statSync(path).size === p.size && sha256(path) === p.sha256 ? path : undefined;
}

/** Make sure every package is in the pool (downloaded from the snapshot's mirror, verified). */
export async function ensurePooled(snap: ArchiveSnapshot, pkgs: MirrorPackage[]): Promise<void> {
  for (const p of pkgs) {
    if (pooledDeb(p)) continue;
    await fetchTo(mirrorUrl(snap.mirror, p.filename), join(ROOT, p.filename), `${p.package} ${p.version}`, { sha256: p.sha256, size: p.size });
  }
}
