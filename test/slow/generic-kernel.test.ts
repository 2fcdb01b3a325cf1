import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isRoot, missingTools, REPO, TestDaemon } from '../helpers/daemon.js';
import { BundleServer } from '../helpers/kernel-bundles.js';
import { createNetns, deleteNetns, exposeInNetns } from '../helpers/netns.js';
import { cachedDeb, debianMirrorUnavailable, ensureDebCache } from '../helpers/debian-mirror.js';
import { bootQemu, buildTestRootfs, busyboxFromDeb, createTestNet, type QemuGuest, type TestNet } from '../helpers/debian-boot.js';

/**
 * Slow tier (BANGER_SLOW=1 or `run-tests.mjs slow`): run scripts/make-generic-kernel.sh for
 * real (~5 min on 2 idle cores), check the bundle and the catalog entry it prints, pull it
 * through the CLI from a loopback catalog, and boot the vmlinux (no initramfs: everything
 * built in, the kernel applies ip= itself) with the same test rootfs under QEMU microvm.
 * BANGER_GENERIC_KERNEL_SRC=<unpacked tree> skips fetching sources (passed as --src).
 */
const slow = process.env.BANGER_SLOW === '1' || process.env.BANGER_TEST_TIER === 'slow';
const skip = !slow
  ? 'slow tier: set BANGER_SLOW=1'
  : !isRoot()
    ? 'needs root (apt-get download, netns, tap)'
    : (missingTools('gcc', 'make', 'flex', 'bison', 'bc', 'zstd', 'tar', 'qemu-system-x86_64', 'mkfs.ext4', 'curl', 'readelf') ?? debianMirrorUnavailable());

let dir: string;
let entry: { name: string; kind: string; kernelVersion: string; tarballUrl: string; tarballSha256: string; sizeBytes: number };
let bundle: string;
let buildSeconds = 0;

before(
  async () => {
    if (skip) return;
    dir = mkdtempSync(join(tmpdir(), 'banger-generic-'));
    const args = [join(REPO, 'scripts', 'make-generic-kernel.sh'), '--out', join(dir, 'out'), '--name', 'generic-test', '--jobs', '2'];
    if (process.env.BANGER_GENERIC_KERNEL_SRC) args.push('--src', process.env.BANGER_GENERIC_KERNEL_SRC);
    const t0 = Date.now();
    const r = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      const c = spawn('bash', args, { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      c.stdout.on('data', (d) => (stdout += d));
      c.stderr.on('data', (d) => (stderr += d));
      c.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    });
    buildSeconds = Math.round((Date.now() - t0) / 1000);
    assert.equal(r.code, 0, r.stderr.slice(-4000));
    entry = JSON.parse(r.stdout);
    bundle = join(dir, 'out', 'generic-test-x86_64.tar.zst');
  },
  { timeout: 3_600_000 },
);

after(
  () => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  },
  { timeout: 120_000 },
);

test('make-generic-kernel.sh packs a bundle and prints its catalog entry', { skip, timeout: 3_600_000 }, () => {
  console.log(`# make-generic-kernel.sh took ${buildSeconds}s`);
  assert.equal(entry.kind, 'bundle');
  assert.equal(entry.name, 'generic-test');
  assert.equal(entry.tarballSha256, createHash('sha256').update(readFileSync(bundle)).digest('hex'));
  assert.equal(entry.sizeBytes, statSync(bundle).size);
  const list = spawnSync('tar', ['--zstd', '-tf', bundle], { encoding: 'utf8' });
  assert.equal(list.status, 0, list.stderr);
  assert.ok(list.stdout.split('\n').includes('vmlinux'), 'vmlinux at the top level');
});

test('the generic kernel pulls through the CLI and boots the test rootfs (ip= by the kernel)', { skip, timeout: 900_000 }, async () => {
  const srv = await new BundleServer().start();
  const dns = createNetns('gkern');
  await exposeInNetns(dns, srv.port);
  const d = new TestDaemon({ netns: dns, env: { BANGER_KERNEL_CATALOGS: srv.url('/catalog.json') } });
  let net: TestNet | undefined;
  let vm: QemuGuest | undefined;
  try {
    srv.set('/generic-test-x86_64.tar.zst', readFileSync(bundle));
    srv.set('/catalog.json', JSON.stringify({ version: 1, entries: [{ ...entry, tarballUrl: 'generic-test-x86_64.tar.zst' }] }));
    await d.start();
    const pulled = await d.json(['kernel', 'pull', 'generic-test'], { timeoutMs: 300_000 });
    assert.equal(pulled.download, 'downloaded');
    const show = await d.json(['kernel', 'show', 'generic-test']);
    assert.ok(existsSync(show.vmlinux));

    const work = join(dir, 'boot');
    mkdirSync(work, { recursive: true });
    const pkgs = await ensureDebCache();
    const rootfs = buildTestRootfs(work, busyboxFromDeb(cachedDeb(pkgs.busybox)!, work), 'generic-token-7');
    net = createTestNet('gen');
    vm = bootQemu({
      kernel: show.vmlinux,
      rootfs,
      net,
      dir: work,
      machine: 'acpi=off',
      append: `console=ttyS0 root=/dev/vda rw panic=-1 reboot=t ${net.ipArg('genguest')}`,
    });
    const text = await vm.waitConsole(/banger-test-guest: ready/, 180_000);
    assert.match(text, /banger-test-guest: hostname=genguest/);
    assert.match(text, /banger-test-guest: init=\/sbin\/init pid=1$/m);
    let body: string | undefined;
    const deadline = Date.now() + 60_000;
    while (body === undefined && Date.now() < deadline) {
      body = net.get('/index.html');
      if (body === undefined) await new Promise((r) => setTimeout(r, 500));
    }
    assert.equal(body?.trim(), 'generic-token-7');
  } finally {
    await vm?.kill();
    net?.destroy();
    await d.cleanup();
    deleteNetns(dns);
    await srv.stop();
  }
});
