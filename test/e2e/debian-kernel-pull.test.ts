import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { openDatabase } from '../../src/core/db.js';
import { isRoot, TestDaemon } from '../helpers/daemon.js';
import { cleanupAll, createNetns, exposeInNetns } from '../helpers/netns.js';
import { debianMirrorUnavailable, startDebianMirror, type DebianMirror } from '../helpers/debian-mirror.js';

/**
 * `banger kernel pull debian-cloud-amd64` (the embedded default entry) through the built CLI and
 * an isolated daemon in its own network namespace, against a local signed Debian mirror
 * (BANGER_DEBIAN_MIRROR, exposed into the namespace at the same loopback URL).
 */
const skip = (isRoot() ? undefined : 'needs root (a network namespace for the daemon)') ?? debianMirrorUnavailable();
let mirror: DebianMirror;
let d: TestDaemon;

before(
  async () => {
    if (skip) return;
    mirror = await startDebianMirror();
    const ns = createNetns('dkp');
    await exposeInNetns(ns, mirror.port);
    d = new TestDaemon({ netns: ns, env: { BANGER_DEBIAN_MIRROR: mirror.url } });
    await d.start();
  },
  { timeout: 900_000 },
);

after(
  async () => {
    await d?.cleanup();
    cleanupAll();
    await mirror?.close();
  },
  { timeout: 120_000 },
);

test('kernel pull debian-cloud-amd64 stores vmlinuz, vmlinux and the banger initramfs', { skip, timeout: 300_000 }, async () => {
  const avail = await d.json(['kernel', 'list', '--available']);
  assert.ok(JSON.stringify(avail).includes('debian-cloud-amd64'), 'the default entry is in the catalog');
  const r = await d.cli(['kernel', 'pull', 'debian-cloud-amd64'], { timeoutMs: 240_000 });
  assert.equal(r.code, 0, r.stderr);
  for (const stage of ['verify-inrelease', 'fetch-packages', 'download', 'initramfs']) assert.match(r.stderr, new RegExp(stage), `progress shows ${stage}`);
  const show = await d.json(['kernel', 'show', 'debian-cloud-amd64']);
  const dir = join(d.root, 'kernels', 'debian-cloud-amd64');
  assert.equal(show.dir, dir);
  assert.equal(show.kernelVersion, mirror.packages.kernel.package.replace(/^linux-image-/, ''));
  assert.match(show.manifest.source, new RegExp(`^debian:${mirror.packages.kernel.package}=`));
  for (const f of ['vmlinux', 'vmlinuz', 'initrd.img', 'manifest.json']) assert.ok(existsSync(join(dir, f)), `${f} stored`);
  assert.equal(readFileSync(join(dir, 'vmlinux')).readUInt32BE(0), 0x7f454c46);
  assert.deepEqual(readdirSync(join(d.root, 'tmp')), [], 'no scratch left in tmp/');
});

test('a tampered mirror fails the pull with E_SIGNATURE and stores nothing', { skip, timeout: 300_000 }, async () => {
  try {
    mirror.tamper('dists/bookworm/InRelease', 300);
    const r = await d.cli(['--json', 'kernel', 'pull', 'debian-cloud-amd64', '--force'], { timeoutMs: 120_000 });
    assert.notEqual(r.code, 0);
    assert.equal(JSON.parse(r.stdout).error.code, 'E_SIGNATURE');
    assert.deepEqual(readdirSync(join(d.root, 'tmp')), [], 'no scratch left in tmp/');
    const show = await d.json(['kernel', 'show', 'debian-cloud-amd64']);
    assert.ok(existsSync(show.vmlinux), 'the kernel pulled before is kept');
  } finally {
    mirror.restore();
  }
});

test('the .debs a Debian kernel came from are its references: prune keeps them, a --force pull uses them, kernel rm frees them', {
  skip,
  timeout: 300_000,
}, async () => {
  const store = join(d.root, 'blobs', 'sha256');
  const debs = [mirror.packages.kernel.sha256, mirror.packages.busybox.sha256];
  for (const h of debs) assert.ok(existsSync(join(store, h)), `${h} (.deb) is in the content store`);
  const db = openDatabase(join(d.root, 'banger.db'), { readOnly: true });
  const refs = (
    db.prepare("SELECT digest FROM blob_refs WHERE owner_kind = 'kernel' AND owner = 'debian-cloud-amd64' ORDER BY digest").all() as { digest: string }[]
  ).map((r) => r.digest);
  db.close();
  assert.deepEqual(refs, debs.map((h) => `sha256:${h}`).sort(), 'blob_refs: the kernel references both .debs');
  for (const cmd of [
    ['system', 'prune'],
    ['image', 'prune-cache'],
  ])
    assert.equal((await d.json(cmd)).removed, 0, `${cmd.join(' ')} frees nothing referenced`);
  const before = mirror.requests.filter((r) => r.endsWith('.deb')).length;
  const r = await d.cli(['kernel', 'pull', 'debian-cloud-amd64', '--force'], { timeoutMs: 240_000 });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(mirror.requests.filter((x) => x.endsWith('.deb')).length, before, 'no .deb downloaded again');
  assert.match(r.stderr, /used-cache/, 'progress says the .debs came from the cache');
  await d.json(['kernel', 'rm', 'debian-cloud-amd64']);
  const p = await d.json(['system', 'prune']);
  assert.equal(p.removed, 2, 'with the kernel gone, prune frees both .debs');
  for (const h of debs) assert.ok(!existsSync(join(store, h)), `${h} freed`);

  // A pull that fails after it stored the kernel .deb (busybox-static does not verify) removes
  // that .deb before the error is reported.
  try {
    mirror.tamper(mirror.packages.busybox.filename, -100);
    const f = await d.cli(['--json', 'kernel', 'pull', 'debian-cloud-amd64'], { timeoutMs: 240_000 });
    assert.notEqual(f.code, 0);
    assert.equal(JSON.parse(f.stdout).error.code, 'E_DIGEST', f.stdout);
    assert.ok(
      mirror.requests.some((x) => x.endsWith(mirror.packages.kernel.filename.split('/').pop()!)),
      'precondition: the kernel .deb was downloaded',
    );
    assert.deepEqual(readdirSync(store), [], 'nothing of the failed pull in the content store');
    assert.deepEqual(readdirSync(join(d.root, 'tmp')), [], 'nothing in tmp/');
  } finally {
    mirror.restore();
  }
});
