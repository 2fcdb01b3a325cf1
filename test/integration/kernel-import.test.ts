import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { VmTableUsage } from '../../src/vms/usage.js';
import { KernelService } from '../../src/kernels/service.js';
import { failure, readJson, sha256, storeSnapshot, testContext } from '../helpers/kernel-bundles.js';
import { fakeElfVmlinux } from '../helpers/fake-vmlinux.js';

const elf = (payload: string): Buffer => fakeElfVmlinux({ release: '6.1.99-test', payload });

function bzImage(): Buffer {
  const b = Buffer.alloc(0x2000);
  b.write('HdrS', 0x202, 'latin1');
  b.writeUInt16LE(0x600, 0x20e);
  b.write('6.1.0-37-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP\0', 0x800, 'latin1');
  return b;
}

function fixture() {
  const src = mkdtempSync(join(tmpdir(), 'banger-ki-'));
  const ctx = testContext();
  return {
    src,
    ctx,
    svc: new KernelService(ctx, { vmUsage: new VmTableUsage(ctx.db) }),
    done: () => (ctx.cleanup(), rmSync(src, { recursive: true, force: true })),
  };
}

test('import an ELF vmlinux with initrd and modules: files copied, version and arch detected, manifest written', async () => {
  const { src, svc, done } = fixture();
  try {
    const v = elf('one');
    writeFileSync(join(src, 'vmlinux'), v);
    writeFileSync(join(src, 'initrd'), 'initrd-bytes');
    mkdirSync(join(src, 'mods', 'kernel'), { recursive: true });
    writeFileSync(join(src, 'mods', 'kernel', 'a.ko'), 'ko');
    symlinkSync('kernel/a.ko', join(src, 'mods', 'a-link.ko'));
    const k = await svc.import('mine', { vmlinux: join(src, 'vmlinux'), initrd: join(src, 'initrd'), modules: join(src, 'mods') });
    assert.equal(k.kernelVersion, '6.1.99-test');
    assert.equal(k.arch, 'x86_64');
    assert.equal(k.distro, 'custom');
    assert.equal(k.source, `import:${join(src, 'vmlinux')}`);
    assert.equal(k.vmlinuxSha256, sha256(v));
    assert.deepEqual(readFileSync(k.vmlinux!), v);
    assert.equal(k.vmlinuz, undefined);
    assert.equal(readFileSync(k.initrd!, 'utf8'), 'initrd-bytes');
    assert.equal(readFileSync(join(k.modulesDir!, 'a-link.ko'), 'utf8'), 'ko');
    // The tree also becomes the guests' read-only modules disk, indexed by depmod.
    assert.equal(k.modulesImage, join(k.dir, 'modules.ext4'));
    assert.equal(spawnSync('e2label', [k.modulesImage!], { encoding: 'utf8' }).stdout.trim(), 'BANGERMODS');
    for (const f of ['/kernel/a.ko', '/modules.dep'])
      assert.match(spawnSync('debugfs', ['-R', `stat ${f}`, k.modulesImage!], { encoding: 'utf8' }).stdout, /Inode:/, `modules.ext4 has ${f}`);
    assert.ok(!existsSync(join(src, 'mods', 'modules.dep')), 'depmod ran on the stored copy, not on the source tree');
    const m = readJson(join(k.dir, 'manifest.json'));
    assert.deepEqual(m.files, { vmlinux: true, vmlinuz: false, initrd: true, modules: true });
    assert.equal(m.source, `import:${join(src, 'vmlinux')}`);
    rmSync(join(src, 'vmlinux'));
    assert.ok(existsSync(svc.get('mine').vmlinux!), 'the store keeps its own copy');
    assert.equal((await failure(svc.import('mine', { vmlinux: join(src, 'initrd') }))).code, 'E_EXISTS');
  } finally {
    done();
  }
});

test('import a bzImage: stored as vmlinuz (no vmlinux), version read from its header', async () => {
  const { src, svc, done } = fixture();
  try {
    writeFileSync(join(src, 'vmlinuz-6.1'), bzImage());
    const k = await svc.import('bz', { vmlinux: join(src, 'vmlinuz-6.1'), kernelVersion: undefined });
    assert.equal(k.vmlinux, undefined);
    assert.ok(k.vmlinuz?.endsWith('/vmlinuz'));
    assert.equal(k.kernelVersion, '6.1.0-37-cloud-amd64');
    assert.equal(k.vmlinuxSha256, sha256(bzImage()));
  } finally {
    done();
  }
});

test('import errors name the missing file or bad field, and leave nothing behind', async () => {
  const { src, ctx, svc, done } = fixture();
  try {
    writeFileSync(join(src, 'vmlinux'), elf('x'));
    writeFileSync(join(src, 'notakernel'), '#!/bin/sh\n');
    writeFileSync(join(src, 'static-elf'), fakeElfVmlinux({ noBanner: true }));
    const cases: [Parameters<KernelService['import']>[1], string, RegExp][] = [
      [{ vmlinux: join(src, 'nope') }, 'E_NOT_FOUND', /--vmlinux .*nope: no such file/],
      [{ vmlinux: join(src, 'vmlinux'), initrd: join(src, 'missing-initrd') }, 'E_NOT_FOUND', /--initrd .*missing-initrd/],
      [{ vmlinux: join(src, 'vmlinux'), modules: join(src, 'missing-mods') }, 'E_NOT_FOUND', /--modules .*missing-mods: no such directory/],
      [{ vmlinux: join(src, 'vmlinux'), modules: join(src, 'vmlinux') }, 'E_INVALID', /--modules .*not a directory/],
      [{ vmlinux: src }, 'E_INVALID', /--vmlinux .*not a regular file/],
      [{ vmlinux: join(src, 'notakernel') }, 'E_INVALID', /not a Linux kernel image/],
      // an ELF, but a program: refused before anything is copied
      [{ vmlinux: '/bin/ls' }, 'E_INVALID', /--vmlinux \/bin\/ls is not a Linux kernel image/],
      // an executable ELF without a Linux banner
      [{ vmlinux: join(src, 'static-elf') }, 'E_INVALID', /static-elf is not a Linux kernel image/],
      [{ vmlinux: 'relative/vmlinux' }, 'E_INVALID', /absolute/],
    ];
    for (const [opts, code, re] of cases) {
      const e = await failure(svc.import('bad', opts));
      assert.equal(e.code, code, e.message);
      assert.match(e.message, re);
    }
    assert.deepEqual(storeSnapshot(ctx), []);
    assert.deepEqual(svc.list(), []);
  } finally {
    done();
  }
});

test('delete: removes row and directory; refused with E_IN_USE while a VM references it, unless force', async () => {
  const { src, ctx, svc, done } = fixture();
  try {
    writeFileSync(join(src, 'vmlinux'), elf('d'));
    await svc.import('k1', { vmlinux: join(src, 'vmlinux') });
    await svc.import('k2', { vmlinux: join(src, 'vmlinux') });
    ctx.db
      .prepare("INSERT INTO vms (name, id, image_name, kernel_name, spec_json, vmm, created_at) VALUES ('box', 'id1', 'img', 'k1', '{}', 'qemu', ?)")
      .run(new Date().toISOString());
    const e = await failure(svc.rm('k1'));
    assert.equal(e.code, 'E_IN_USE');
    assert.match(e.message, /box/);
    assert.match(e.hint ?? '', /--force/);
    assert.ok(existsSync(ctx.layout.kernelDir('k1')));
    const r = await svc.rm('k1', { force: true });
    assert.deepEqual(r.usedBy, ['box']);
    assert.equal(existsSync(ctx.layout.kernelDir('k1')), false);
    await svc.rm('k2');
    assert.deepEqual(svc.list(), []);
    assert.deepEqual(storeSnapshot(ctx), []);
    const nf = await failure(svc.rm('k2'));
    assert.equal(nf.code, 'E_NOT_FOUND');
    assert.match(nf.hint ?? '', /banger kernel pull k2/);
    assert.throws(
      () => svc.get('k2'),
      (x: any) => x.code === 'E_NOT_FOUND' && /kernel pull k2/.test(x.hint),
    );
  } finally {
    done();
  }
});

test('import --modules keeps in-tree symlinks and drops ones pointing outside (like build -> /usr/src/…)', async () => {
  const { src, svc, done } = fixture();
  try {
    writeFileSync(join(src, 'vmlinux'), elf('m'));
    mkdirSync(join(src, 'mods', 'kernel'), { recursive: true });
    writeFileSync(join(src, 'mods', 'kernel', 'a.ko'), 'ko');
    symlinkSync('kernel/a.ko', join(src, 'mods', 'in.ko'));
    symlinkSync('/usr/src/linux-headers-x', join(src, 'mods', 'build'));
    symlinkSync('../../../../etc', join(src, 'mods', 'kernel', 'up'));
    const k = await svc.import('mods', { vmlinux: join(src, 'vmlinux'), modules: join(src, 'mods') });
    const { readdirSync, lstatSync } = await import('node:fs');
    assert.deepEqual(
      readdirSync(k.modulesDir!)
        .filter((n) => !n.startsWith('modules.'))
        .sort(),
      ['in.ko', 'kernel'],
      "the tree as imported, plus depmod's modules.* index",
    );
    assert.deepEqual(readdirSync(join(k.modulesDir!, 'kernel')), ['a.ko']);
    assert.ok(lstatSync(join(k.modulesDir!, 'in.ko')).isSymbolicLink());
  } finally {
    done();
  }
});
