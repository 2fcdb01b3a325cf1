import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { exec } from '../../src/core/exec.js';
import { nullLogger } from '../../src/core/log.js';
import { BangerError } from '../../src/core/errors.js';
import { fetchDebianKernel, type DebianKernelEntry, type FetchDebianKernelOptions } from '../../src/kernels/debian/fetch.js';
import { ContentStore } from '../../src/core/content-store.js';
import { debianMirrorUnavailable, startDebianMirror, type DebianMirror } from '../helpers/debian-mirror.js';

const KEYRING = '/usr/share/keyrings/debian-archive-keyring.gpg';
const skip = debianMirrorUnavailable();

const entry: DebianKernelEntry = {
  name: 'debian-cloud-amd64',
  kind: 'debian',
  distro: 'debian',
  arch: 'x86_64',
  package: 'linux-image-cloud-amd64',
  suite: 'bookworm',
  description: 'Debian cloud kernel',
};

/** A content store whose blobs directory is `blobs` (a root beside it). */
function storeAt(blobs: string): ContentStore {
  return ContentStore.at(blobs);
}

let mirror: DebianMirror;
let scratch: string;

before(
  async () => {
    if (skip) return;
    mirror = await startDebianMirror();
    scratch = mkdtempSync(join(tmpdir(), 'banger-debfetch-'));
  },
  { timeout: 600_000 },
);
after(
  async () => {
    if (skip) return;
    await mirror.close();
    rmSync(scratch, { recursive: true, force: true });
  },
  { timeout: 120_000 },
);

function dirs(name: string) {
  const outDir = join(scratch, name, 'out');
  const tmpDir = join(scratch, name, 'tmp');
  mkdirSync(outDir, { recursive: true });
  mkdirSync(tmpDir, { recursive: true });
  return { outDir, tmpDir };
}

function opts(name: string, extra: Partial<FetchDebianKernelOptions> = {}): FetchDebianKernelOptions {
  return { entry, mirror: mirror.url, keyring: KEYRING, ...dirs(name), exec, log: nullLogger, ...extra };
}

/** Names inside a newc cpio archive (a reader independent of the writer under test: GNU cpio). */
function cpioNames(gz: Buffer): string[] {
  const r = spawnSync('cpio', ['-t', '--quiet'], { input: gunzipSync(gz) });
  assert.equal(r.status, 0, r.stderr?.toString());
  return r.stdout.toString().split('\n').filter(Boolean);
}

/** `step`: the named step the failure must carry (`details.step`, with the catalog entry). */
async function rejects(o: FetchDebianKernelOptions, code: string, re: RegExp, step?: string): Promise<void> {
  await assert.rejects(fetchDebianKernel(o), (e: unknown) => {
    assert.ok(e instanceof BangerError, `expected BangerError, got ${e}`);
    assert.equal(e.code, code, e.message);
    assert.match(e.message, re);
    if (step) assert.deepEqual([e.details?.step, e.details?.entry], [step, o.entry.name], e.message);
    return true;
  });
  assert.deepEqual(readdirSync(o.outDir), [], 'outDir must be left empty');
  assert.deepEqual(readdirSync(o.tmpDir), [], 'tmpDir must be left empty');
}

test('verified fetch from a local mirror: vmlinuz, vmlinux ELF and initramfs', { skip }, async () => {
  const o = opts('ok');
  const stages = new Set<string>();
  const r = await fetchDebianKernel({ ...o, progress: (ev) => stages.add(ev.stage) });
  const kpkg = mirror.packages.kernel;
  assert.equal(r.package, kpkg.package);
  assert.equal(r.packageVersion, kpkg.version);
  assert.equal(r.debSha256, kpkg.sha256);
  assert.equal(r.kernelVersion, kpkg.package.replace(/^linux-image-/, ''));
  assert.match(r.source, new RegExp(`^debian:${kpkg.package}=`));
  assert.deepEqual(readdirSync(o.outDir).sort(), ['initrd.img', 'modules.ext4', 'vmlinux', 'vmlinuz']);
  // Every module, with depmod's index, in a read-only ext4 for the guest's /lib/modules/RELEASE.
  const mods = join(o.outDir, 'modules.ext4');
  assert.equal(spawnSync('e2label', [mods], { encoding: 'utf8' }).stdout.trim(), 'BANGERMODS');
  for (const f of ['/modules.dep', '/modules.alias', '/kernel/fs/overlayfs/overlay.ko', '/kernel/net/netfilter/nf_tables.ko']) {
    assert.match(spawnSync('debugfs', ['-R', `stat ${f}`, mods], { encoding: 'utf8' }).stdout, /Inode:/, `modules.ext4 has ${f}`);
  }
  assert.match(spawnSync('debugfs', ['-R', 'cat /modules.dep', mods], { encoding: 'utf8' }).stdout, /^kernel\/fs\/overlayfs\/overlay\.ko:/m);
  assert.equal(spawnSync('e2fsck', ['-fn', mods]).status, 0);
  const vmlinuz = readFileSync(join(o.outDir, 'vmlinuz'));
  assert.equal(vmlinuz.toString('latin1', 0x202, 0x206), 'HdrS');
  const vmlinux = readFileSync(join(o.outDir, 'vmlinux'));
  assert.equal(vmlinux.readUInt32BE(0), 0x7f454c46, 'vmlinux starts with the ELF magic');
  assert.ok(vmlinux.length > vmlinuz.length, 'vmlinux is larger than the compressed image');
  const names = cpioNames(readFileSync(join(o.outDir, 'initrd.img')));
  for (const n of ['init', 'bin/busybox', 'bin/sh', 'bin/switch_root', 'dev/console', 'lib/modules/banger.load'])
    assert.ok(names.includes(n), `initramfs has ${n}`);
  for (const m of ['virtio_mmio.ko', 'virtio_blk.ko', 'virtio_net.ko', 'vmw_vsock_virtio_transport.ko', 'virtio_console.ko', 'failover.ko']) {
    assert.ok(
      names.some((n) => n.endsWith('/' + m)),
      `initramfs has ${m}`,
    );
  }
  assert.deepEqual(readdirSync(o.tmpDir), [], 'scratch removed after success');
  for (const s of ['verify-inrelease', 'fetch-packages', 'resolve', 'download', 'unpack', 'vmlinux', 'initramfs', 'modules'])
    assert.ok(stages.has(s), `progress stage ${s}`);
  // Debian's own Packages.xz was used (the .gz and plain fallbacks: debian-archive-formats.test.ts)
  assert.ok(mirror.requests.includes('dists/bookworm/main/binary-amd64/Packages.xz'));
  assert.ok(!mirror.requests.includes('dists/bookworm/main/binary-amd64/Packages'));
});

test('load order in the initramfs puts dependencies first', { skip }, async () => {
  const o = opts('order');
  await fetchDebianKernel(o);
  const r = spawnSync('cpio', ['-i', '--quiet', '--to-stdout', 'lib/modules/banger.load'], { input: gunzipSync(readFileSync(join(o.outDir, 'initrd.img'))) });
  const order = r.stdout
    .toString()
    .trim()
    .split('\n')
    .map((l) => l.replace(/^.*\//, '').replace(/\.ko$/, ''));
  const pos = (m: string) => order.indexOf(m);
  for (const [dep, user] of [
    ['virtio_ring', 'virtio_blk'],
    ['virtio', 'virtio_mmio'],
    ['failover', 'net_failover'],
    ['net_failover', 'virtio_net'],
    ['vsock', 'vmw_vsock_virtio_transport'],
  ] as const) {
    assert.ok(pos(dep) >= 0 && pos(user) > pos(dep), `${dep} before ${user} in ${order.join(',')}`);
  }
  assert.equal(new Set(order).size, order.length, 'each module once');
});

test('content store: the second pull uses the cached .debs', { skip }, async () => {
  const blobs = join(scratch, 'blobs');
  const store = storeAt(blobs);
  const blobPath = (hex: string) => join(blobs, hex);
  await fetchDebianKernel(opts('cache1', { store }));
  assert.ok(existsSync(blobPath(mirror.packages.kernel.sha256)));
  const before = mirror.requests.length;
  await fetchDebianKernel(opts('cache2', { store }));
  const fetched = mirror.requests.slice(before);
  assert.ok(!fetched.some((r) => r.startsWith('pool/')), `no .deb downloaded again: ${fetched.join(', ')}`);
});

test('a flipped byte in InRelease is rejected (E_SIGNATURE), nothing left behind', { skip }, async () => {
  try {
    mirror.tamper('dists/bookworm/InRelease', 200); // inside the signed text
    await rejects(opts('badsig'), 'E_SIGNATURE', /InRelease signature check failed/, 'verify-inrelease');
  } finally {
    mirror.restore();
  }
});

test('an InRelease signed for another suite is rejected (E_SIGNATURE)', { skip }, async () => {
  const { copyFileSync } = await import('node:fs');
  mkdirSync(join(mirror.root, 'dists', 'trixie'), { recursive: true });
  copyFileSync(join(mirror.root, 'dists/bookworm/InRelease'), join(mirror.root, 'dists/trixie/InRelease'));
  await rejects(opts('suite', { entry: { ...entry, suite: 'trixie' } }), 'E_SIGNATURE', /not 'trixie'/);
});

test('a Packages index that does not match InRelease is rejected (E_DIGEST), nothing left behind', { skip }, async () => {
  try {
    mirror.tamper('dists/bookworm/main/binary-amd64/Packages.xz', 1000);
    await rejects(opts('badpkgs'), 'E_DIGEST', /Packages.*sha256 mismatch/, 'fetch-packages');
  } finally {
    mirror.restore();
  }
});

test('a .deb that does not match Packages is rejected (E_DIGEST), nothing left behind', { skip }, async () => {
  const blobs = join(scratch, 'blobs-bad');
  try {
    mirror.tamper(mirror.packages.kernel.filename, -5000);
    await rejects(opts('baddeb', { store: storeAt(blobs) }), 'E_DIGEST', new RegExp(`${mirror.packages.kernel.package}.*sha256 mismatch`), 'download');
    assert.deepEqual(existsSync(blobs) ? readdirSync(blobs).filter((n) => n !== mirror.packages.busybox.sha256) : [], [], 'no bad blob in the store');
  } finally {
    mirror.restore();
  }
});

test('an unknown package is E_NOT_FOUND naming it, nothing left behind', { skip }, async () => {
  await rejects(opts('nopkg', { entry: { ...entry, package: 'linux-image-does-not-exist' } }), 'E_NOT_FOUND', /linux-image-does-not-exist/, 'resolve');
});

test('a mirror without the suite is E_NOT_FOUND naming the URL', { skip }, async () => {
  await rejects(opts('nosuite', { entry: { ...entry, suite: 'nosuch' } }), 'E_NOT_FOUND', /dists\/nosuch\/InRelease/);
});

test('a wrong keyring is E_SIGNATURE', { skip }, async () => {
  const empty = join(scratch, 'empty.gpg');
  const { writeFileSync } = await import('node:fs');
  writeFileSync(empty, '');
  await rejects(opts('keyring', { keyring: empty }), 'E_SIGNATURE', /no signature made by a key in the keyring|no valid signature/);
  assert.ok(statSync(empty).size === 0);
});

test('cancellation removes everything (E_CANCELLED)', { skip }, async () => {
  const ac = new AbortController();
  const o = opts('cancel', {
    signal: ac.signal,
    progress: (ev) => {
      if (ev.stage === 'download') ac.abort();
    },
  });
  await rejects(o, 'E_CANCELLED', /cancel/);
});
