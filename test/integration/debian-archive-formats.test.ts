import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { gzipSync } from 'node:zlib';
import { exec } from '../../src/core/exec.js';
import { nullLogger } from '../../src/core/log.js';
import { BangerError } from '../../src/core/errors.js';
import { fetchDebianKernel, type DebianKernelEntry } from '../../src/kernels/debian/fetch.js';
import { cachedDeb, debianMirrorUnavailable, ensureDebCache, type MirrorPackage } from '../helpers/debian-mirror.js';
import { missingTools } from '../helpers/daemon.js';

/**
 * The index formats and archive shapes the real mirrors use but the apt-list based mirror cannot
 * reproduce (apt keeps only an lz4 copy): a synthetic archive signed by a throw-away key made
 * here with gpg, served as a file:// mirror, with the real .debs. Covers Packages.xz and
 * Packages.gz, an expired Valid-Until, and a meta package whose dependency is missing.
 */
const skip = missingTools('gpg', 'gpgv', 'xz', 'dpkg-deb') ?? debianMirrorUnavailable();

let dir: string;
let keyring: string;
let gnupg: string;
let pkgs: { meta: MirrorPackage; kernel: MirrorPackage; busybox: MirrorPackage };

function gpg(args: string[], input?: string): string {
  const r = spawnSync('gpg', ['--batch', '--quiet', '--homedir', gnupg, ...args], { encoding: 'utf8', input });
  if (r.status !== 0) throw new Error(`gpg ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function stanza(p: MirrorPackage, extra: string): string {
  const deb = cachedDeb(p)!;
  return `Package: ${p.package}\nVersion: ${p.version}\nArchitecture: amd64\n${extra}Filename: ${p.filename}\nSize: ${statSync(deb).size}\nSHA256: ${p.sha256}\n`;
}

/** Write a signed archive under `root` offering the index only in `formats`. */
function buildArchive(root: string, opts: { formats: ('.xz' | '.gz' | '')[]; validUntil?: string; metaDepends?: string }): void {
  const depends = opts.metaDepends ?? `${pkgs.kernel.package} (= ${pkgs.kernel.version})`;
  const packages = Buffer.from([stanza(pkgs.meta, `Depends: ${depends}\n`), stanza(pkgs.kernel, ''), stanza(pkgs.busybox, '')].join('\n'));
  const bin = join(root, 'dists', 'bookworm', 'main', 'binary-amd64');
  mkdirSync(bin, { recursive: true });
  const lines: string[] = [];
  for (const f of opts.formats) {
    const data = f === '.xz' ? spawnSync('xz', ['-c'], { input: packages }).stdout : f === '.gz' ? gzipSync(packages) : packages;
    writeFileSync(join(bin, `Packages${f}`), data);
    lines.push(` ${sha(data)} ${data.length} main/binary-amd64/Packages${f}`);
  }
  const release = `Origin: banger-test\nSuite: stable\nCodename: bookworm\n${opts.validUntil ? `Valid-Until: ${opts.validUntil}\n` : ''}Date: ${new Date().toUTCString()}\nSHA256:\n${lines.join('\n')}\n`;
  writeFileSync(join(root, 'dists', 'bookworm', 'InRelease'), gpg(['--clearsign', '--output', '-'], release));
  for (const p of Object.values(pkgs)) {
    const dst = join(root, p.filename);
    mkdirSync(dirname(dst), { recursive: true });
    copyFileSync(cachedDeb(p)!, dst);
  }
}

const entry: DebianKernelEntry = {
  name: 'synthetic',
  kind: 'debian',
  distro: 'debian',
  arch: 'x86_64',
  package: 'linux-image-cloud-amd64',
  suite: 'bookworm',
  description: '',
};

/** Build the archive and start a fetch from it (verified against `withKeyring`, default the test key). */
function run(name: string, archive: Parameters<typeof buildArchive>[1], withKeyring?: string) {
  const root = join(dir, name, 'archive');
  buildArchive(root, archive);
  const outDir = join(dir, name, 'out');
  const tmpDir = join(dir, name, 'tmp');
  mkdirSync(outDir, { recursive: true });
  mkdirSync(tmpDir, { recursive: true });
  const promise = fetchDebianKernel({ entry, mirror: pathToFileURL(root).href, keyring: withKeyring ?? keyring, outDir, tmpDir, exec, log: nullLogger });
  return { outDir, tmpDir, promise };
}

before(
  async () => {
    if (skip) return;
    pkgs = await ensureDebCache();
    dir = mkdtempSync(join(tmpdir(), 'banger-debformats-'));
    gnupg = join(dir, 'gnupg');
    mkdirSync(gnupg, { mode: 0o700 });
    gpg(['--passphrase', '', '--quick-gen-key', 'banger test archive <archive@banger.invalid>', 'ed25519', 'sign', 'never']);
    keyring = join(dir, 'keyring.gpg');
    writeFileSync(keyring, spawnSync('gpg', ['--batch', '--homedir', gnupg, '--export'], {}).stdout);
  },
  { timeout: 600_000 },
);

after(
  () => {
    if (dir) {
      spawnSync('gpgconf', ['--homedir', gnupg, '--kill', 'all']);
      rmSync(dir, { recursive: true, force: true });
    }
  },
  { timeout: 120_000 },
);

test('a file:// mirror offering only Packages.xz works (xz -dc)', { skip, timeout: 300_000 }, async () => {
  const r = run('xz', { formats: ['.xz'] });
  const res = await r.promise;
  assert.equal(res.package, pkgs.kernel.package);
  assert.deepEqual(readdirSync(r.outDir).sort(), ['initrd.img', 'modules.ext4', 'vmlinux', 'vmlinuz']);
});

test('a mirror offering only Packages.gz works', { skip, timeout: 300_000 }, async () => {
  const r = run('gz', { formats: ['.gz'] });
  assert.equal((await r.promise).debSha256, pkgs.kernel.sha256);
});

test('a mirror offering only a plain Packages works (the last fallback)', { skip, timeout: 300_000 }, async () => {
  const r = run('plain', { formats: [''] });
  assert.equal((await r.promise).debSha256, pkgs.kernel.sha256);
});

test('an expired Valid-Until is refused (E_SIGNATURE), nothing left behind', { skip }, async () => {
  const r = run('expired', { formats: ['.xz'], validUntil: 'Sat, 01 Jan 2022 00:00:00 UTC' });
  await assert.rejects(r.promise, (e: unknown) => e instanceof BangerError && e.code === 'E_SIGNATURE' && /expired on Sat, 01 Jan 2022/.test(e.message));
  assert.deepEqual(readdirSync(r.outDir), []);
  assert.deepEqual(readdirSync(r.tmpDir), []);
});

test('a meta package depending on a version the index lacks is E_NOT_FOUND naming it', { skip }, async () => {
  const r = run('dep', { formats: ['.xz'], metaDepends: `${pkgs.kernel.package} (= 99.0-1)` });
  await assert.rejects(
    r.promise,
    (e: unknown) => e instanceof BangerError && e.code === 'E_NOT_FOUND' && e.message.includes(`${pkgs.kernel.package} (= 99.0-1)`),
  );
  assert.deepEqual(readdirSync(r.outDir), []);
  assert.deepEqual(readdirSync(r.tmpDir), []);
});

test('an archive signed by a key outside the Debian keyring is refused (E_SIGNATURE)', { skip }, async () => {
  const r = run('otherkey', { formats: ['.xz'] }, '/usr/share/keyrings/debian-archive-keyring.gpg');
  await assert.rejects(
    r.promise,
    (e: unknown) => e instanceof BangerError && e.code === 'E_SIGNATURE' && /no signature made by a key in the keyring/.test(e.message),
  );
  assert.deepEqual(readdirSync(r.outDir), []);
  assert.deepEqual(readdirSync(r.tmpDir), []);
});
