import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BangerError, ErrorCode } from '../../src/core/errors.js';
import type { FetchDebianKernelOptions } from '../../src/kernels/debian/fetch.js';
import { KernelService } from '../../src/kernels/service.js';
import { readJson, sha256, storeSnapshot, testContext } from '../helpers/kernel-bundles.js';
import { fakeElfVmlinux } from '../helpers/fake-vmlinux.js';

/**
 * The "debian" catalog kind: KernelService resolves the mirror, hands a staging dir to the
 * Debian fetcher (replaced here: the real one talks to Debian's archive and is tested by the
 * debian helper), then installs exactly like a bundle.
 */
function aptDir(content: string): string {
  const d = mkdtempSync(join(tmpdir(), 'banger-apt-'));
  mkdirSync(join(d, 'sources.list.d'));
  writeFileSync(join(d, 'sources.list.d', 'debian.sources'), content);
  return d;
}

test('pull of the embedded Debian entry: mirror from apt sources, fetcher fills staging, manifest + row', async () => {
  const ctx = testContext();
  const apt = aptDir('Types: deb\nURIs: http://mirror.test/debian/\nSuites: bookworm bookworm-updates\nComponents: main\n');
  const calls: FetchDebianKernelOptions[] = [];
  const svc = new KernelService(ctx, {
    etcApt: apt,
    fetchDebian: async (o) => {
      calls.push(o);
      assert.ok(existsSync(o.outDir) && existsSync(o.tmpDir));
      writeFileSync(join(o.outDir, 'vmlinuz'), 'bz');
      writeFileSync(join(o.outDir, 'vmlinux'), '\x7fELF debian');
      writeFileSync(join(o.outDir, 'initrd.img'), 'initramfs');
      writeFileSync(join(o.tmpDir, 'scratch.deb'), 'deb');
      o.progress?.({ stage: 'deb', key: o.entry.name, message: 'verified' });
      return { kernelVersion: '6.1.0-99-cloud-amd64', source: `debian:linux-image-6.1.0-99-cloud-amd64@${o.mirror}`, debSha256: 'e'.repeat(64) };
    },
  });
  try {
    const res = await svc.pull('debian-cloud-amd64');
    assert.equal(calls.length, 1);
    assert.equal(calls[0]!.mirror, 'http://mirror.test/debian');
    assert.equal(calls[0]!.keyring, ctx.config.debianKeyring);
    assert.equal(calls[0]!.entry.package, 'linux-image-cloud-amd64');
    assert.equal(res.download, 'debian');
    const k = res.kernel;
    assert.equal(k.kernelVersion, '6.1.0-99-cloud-amd64');
    assert.equal(k.source, 'debian:linux-image-6.1.0-99-cloud-amd64@http://mirror.test/debian');
    assert.equal(k.distro, 'debian');
    assert.equal(k.vmlinuxSha256, sha256(Buffer.from('\x7fELF debian')));
    assert.ok(k.vmlinux && k.vmlinuz && k.initrd);
    assert.equal(readFileSync(k.initrd, 'utf8'), 'initramfs');
    const m = readJson(join(k.dir, 'manifest.json'));
    assert.equal(m.source, k.source);
    assert.deepEqual(m.files, { vmlinux: true, vmlinuz: true, initrd: true, modules: false });
    assert.deepEqual(
      storeSnapshot(ctx).filter((p) => p.startsWith('tmp/')),
      [],
      'staging and scratch removed',
    );
    assert.equal(svc.defaultName(), 'debian-cloud-amd64');
    assert.equal(svc.get(svc.defaultName()).name, 'debian-cloud-amd64');
  } finally {
    ctx.cleanup();
    rmSync(apt, { recursive: true, force: true });
  }
});

test('a failing Debian fetch (e.g. bad signature) leaves nothing; config debianMirror wins over apt', async () => {
  const ctx = testContext({ config: { debianMirror: 'http://configured.test/debian' } });
  const apt = aptDir('Types: deb\nURIs: http://apt.test/debian\nSuites: bookworm\n');
  let mirror = '';
  const svc = new KernelService(ctx, {
    etcApt: apt,
    fetchDebian: async (o) => {
      mirror = o.mirror;
      writeFileSync(join(o.outDir, 'vmlinux'), 'partial');
      writeFileSync(join(o.tmpDir, 'InRelease'), 'x');
      throw new BangerError(ErrorCode.Signature, 'InRelease: bad signature');
    },
  });
  try {
    await assert.rejects(svc.pull('debian-cloud-amd64'), (e: any) => e.code === 'E_SIGNATURE');
    assert.equal(mirror, 'http://configured.test/debian');
    assert.deepEqual(storeSnapshot(ctx), []);
    assert.deepEqual(svc.list(), []);
  } finally {
    ctx.cleanup();
    rmSync(apt, { recursive: true, force: true });
  }
});

test('no mirror configured and none in apt sources: E_INVALID naming the setting, nothing left', async () => {
  const ctx = testContext();
  const apt = aptDir('Types: deb\nURIs: https://deb.nodesource.com/node_20.x\nSuites: nodistro\n');
  const svc = new KernelService(ctx, { etcApt: apt, fetchDebian: async () => assert.fail('must not be called') });
  try {
    await assert.rejects(svc.pull('debian-cloud-amd64'), (e: any) => e.code === 'E_INVALID' && /debianMirror/.test(e.hint));
    assert.deepEqual(storeSnapshot(ctx), []);
  } finally {
    ctx.cleanup();
    rmSync(apt, { recursive: true, force: true });
  }
});

test('a kernel whose files vanished is reported by get() with a re-pull hint; rm still works', async () => {
  const ctx = testContext();
  const src = mkdtempSync(join(tmpdir(), 'banger-kv-'));
  try {
    const svc = new KernelService(ctx);
    writeFileSync(join(src, 'vmlinux'), fakeElfVmlinux());
    await svc.import('gone', { vmlinux: join(src, 'vmlinux') });
    rmSync(ctx.layout.kernelDir('gone'), { recursive: true });
    assert.throws(
      () => svc.get('gone'),
      (e: any) => e.code === 'E_NOT_FOUND' && /--force/.test(e.hint),
    );
    await svc.rm('gone');
    assert.deepEqual(svc.list(), []);
  } finally {
    ctx.cleanup();
    rmSync(src, { recursive: true, force: true });
  }
});

test('reconcile removes kernel directories without a row and reports rows whose files are gone', async () => {
  const ctx = testContext();
  const src = mkdtempSync(join(tmpdir(), 'banger-kr-'));
  try {
    const svc = new KernelService(ctx);
    writeFileSync(join(src, 'vmlinux'), fakeElfVmlinux());
    await svc.import('kept', { vmlinux: join(src, 'vmlinux') });
    await svc.import('hollow', { vmlinux: join(src, 'vmlinux') });
    rmSync(join(ctx.layout.kernelDir('hollow'), 'vmlinux'));
    mkdirSync(join(ctx.layout.kernelDir('orphan'), 'modules'), { recursive: true });
    writeFileSync(join(ctx.layout.kernelDir('orphan'), 'vmlinux'), 'x');
    assert.deepEqual(await svc.reconcile(), { removedDirs: ['orphan'], missingFiles: ['hollow'] });
    assert.equal(existsSync(ctx.layout.kernelDir('orphan')), false);
    assert.ok(existsSync(svc.get('kept').vmlinux!));
    assert.deepEqual(await svc.reconcile(), { removedDirs: [], missingFiles: ['hollow'] });
  } finally {
    ctx.cleanup();
    rmSync(src, { recursive: true, force: true });
  }
});
