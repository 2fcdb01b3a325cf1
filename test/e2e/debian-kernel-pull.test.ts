import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
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

before(async () => {
  if (skip) return;
  mirror = await startDebianMirror();
  const ns = createNetns('dkp');
  await exposeInNetns(ns, mirror.port);
  d = new TestDaemon({ netns: ns, env: { BANGER_DEBIAN_MIRROR: mirror.url } });
  await d.start();
}, { timeout: 900_000 });

after(async () => {
  await d?.cleanup();
  cleanupAll();
  await mirror?.close();
}, { timeout: 120_000 });

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
