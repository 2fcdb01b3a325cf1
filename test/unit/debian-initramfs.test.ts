import { test } from 'node:test';
import assert from 'node:assert/strict';
import { gunzipSync, gzipSync } from 'node:zlib';
import { writeCpio } from '../../src/kernels/debian/cpio.js';
import { initramfsEntries } from '../../src/kernels/debian/initramfs.js';
import { locatePayload } from '../../src/kernels/debian/vmlinux.js';
import { moduleName, readModinfo } from '../../src/kernels/debian/modules.js';

/** Independent newc reader for the tests (the kernel's format, not our writer's code). */
function readNewc(buf: Buffer): { name: string; mode: number; rdevMajor: number; rdevMinor: number; data: Buffer }[] {
  const out = [];
  let o = 0;
  const align = (n: number) => (n + 3) & ~3;
  for (;;) {
    assert.equal(buf.toString('latin1', o, o + 6), '070701', `magic at ${o}`);
    const f = (i: number) => parseInt(buf.toString('latin1', o + 6 + i * 8, o + 14 + i * 8), 16);
    const mode = f(1);
    const size = f(6);
    const namesize = f(11);
    const name = buf.toString('utf8', o + 110, o + 110 + namesize - 1);
    const dataStart = align(o + 110 + namesize);
    if (name === 'TRAILER!!!') break;
    out.push({ name, mode, rdevMajor: f(9), rdevMinor: f(10), data: buf.subarray(dataStart, dataStart + size) });
    o = align(dataStart + size);
  }
  return out;
}

test('writeCpio: newc headers, 4-byte alignment, file data, symlinks, device nodes, trailer', () => {
  const buf = writeCpio([
    { type: 'dir', path: 'bin' },
    { type: 'file', path: '/bin/hello', data: Buffer.from('hi!'), mode: 0o755 },
    { type: 'symlink', path: 'bin/sh', target: 'hello' },
    { type: 'char', path: 'console', major: 5, minor: 1 },
  ]);
  assert.equal(buf.length % 4, 0);
  const e = readNewc(buf);
  assert.deepEqual(
    e.map((x) => x.name),
    ['bin', 'bin/hello', 'bin/sh', 'console'],
  );
  assert.equal(e[0]!.mode, 0o040755);
  assert.equal(e[1]!.mode, 0o100755);
  assert.equal(e[1]!.data.toString(), 'hi!');
  assert.equal(e[2]!.mode, 0o120777);
  assert.equal(e[2]!.data.toString(), 'hello');
  assert.equal(e[3]!.mode, 0o020600);
  assert.deepEqual([e[3]!.rdevMajor, e[3]!.rdevMinor], [5, 1]);
});

test('writeCpio refuses path traversal', () => {
  assert.throws(() => writeCpio([{ type: 'file', path: '../etc/passwd', data: Buffer.alloc(0) }]), /unsafe path/);
});

test('initramfs entries: /init, busybox, applets, modules in order with a load list', async () => {
  const elf = Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1]);
  const entries = await initramfsEntries({
    busybox: elf,
    kernelVersion: '6.1.0-50-cloud-amd64',
    init: Buffer.from('#!/bin/sh\n'),
    modules: [
      { name: 'virtio', rel: 'kernel/drivers/virtio/virtio.ko', data: Buffer.from('a') },
      { name: 'virtio_blk', rel: 'kernel/drivers/block/virtio_blk.ko', data: Buffer.from('b') },
    ],
  });
  const e = readNewc(gunzipSync(gzipSync(writeCpio(entries))));
  const names = e.map((x) => x.name);
  for (const n of ['init', 'bin/busybox', 'bin/switch_root', 'dev/console', 'lib/modules/6.1.0-50-cloud-amd64/kernel/drivers/block/virtio_blk.ko'])
    assert.ok(names.includes(n), n);
  // parents before children
  for (const [i, n] of names.entries()) {
    const parent = n.split('/').slice(0, -1).join('/');
    if (parent) assert.ok(names.indexOf(parent) >= 0 && names.indexOf(parent) < i, `${parent} before ${n}`);
  }
  const load = e.find((x) => x.name === 'lib/modules/banger.load')!.data.toString();
  assert.equal(
    load,
    '/lib/modules/6.1.0-50-cloud-amd64/kernel/drivers/virtio/virtio.ko\n/lib/modules/6.1.0-50-cloud-amd64/kernel/drivers/block/virtio_blk.ko\n',
  );
  assert.equal(e.find((x) => x.name === 'init')!.mode, 0o100755);
});

test('initramfs refuses a busybox that is not ELF', async () => {
  await assert.rejects(initramfsEntries({ busybox: Buffer.from('#!/bin/sh'), kernelVersion: 'x', modules: [], init: Buffer.alloc(0) }), /not an ELF/);
});

/** A minimal bzImage: header fields at their boot-protocol offsets and a payload. */
function fakeBzImage(payload: Buffer, setupSects = 1): Buffer {
  const start = ((setupSects || 4) + 1) * 512; // 0 means 4 (boot protocol)
  const img = Buffer.alloc(start + payload.length);
  img[0x1f1] = setupSects;
  img.write('HdrS', 0x202, 'latin1');
  img.writeUInt16LE(0x20f, 0x206);
  img.writeUInt32LE(0, 0x248);
  img.writeUInt32LE(payload.length, 0x24c);
  payload.copy(img, start);
  return img;
}

test('locatePayload: finds the payload, identifies the format, strips the appended size', () => {
  const lz4 = Buffer.concat([Buffer.from([0x02, 0x21, 0x4c, 0x18, 9, 9, 9]), Buffer.from([0x10, 0x27, 0, 0])]);
  const p = locatePayload(fakeBzImage(lz4), 'vmlinuz-test');
  assert.equal(p.format.name, 'lz4');
  assert.equal(p.expectedSize, 10000);
  assert.deepEqual([...p.data], [0x02, 0x21, 0x4c, 0x18, 9, 9, 9]);
  const gz = Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 1, 2]);
  const g = locatePayload(fakeBzImage(gz, 0), 'vmlinuz-gz');
  assert.equal(g.format.name, 'gzip');
  assert.equal(g.expectedSize, undefined);
  assert.equal(g.data.length, gz.length);
});

test('locatePayload rejects non-bzImages and unknown compression, naming the file', () => {
  assert.throws(() => locatePayload(Buffer.alloc(4096), 'not-a-kernel'), /not-a-kernel.*HdrS/);
  assert.throws(() => locatePayload(fakeBzImage(Buffer.from([1, 2, 3, 4, 5, 6, 7, 8, 9])), 'odd'), /odd.*unknown compression/);
  const img = fakeBzImage(Buffer.alloc(16));
  img.writeUInt32LE(1 << 20, 0x24c);
  assert.throws(() => locatePayload(img, 'trunc'), /outside the file/);
});

/** A minimal ELF64 with a .modinfo section. */
function fakeModule(modinfo: string): Buffer {
  const shstr = Buffer.from('\0.modinfo\0.shstrtab\0');
  const info = Buffer.from(modinfo);
  const infoOff = 64;
  const strOff = infoOff + info.length;
  const shoff = strOff + shstr.length;
  const buf = Buffer.alloc(shoff + 3 * 64);
  buf.writeUInt32BE(0x7f454c46, 0);
  buf[4] = 2;
  buf[5] = 1;
  buf.writeBigUInt64LE(BigInt(shoff), 0x28);
  buf.writeUInt16LE(64, 0x3a);
  buf.writeUInt16LE(3, 0x3c);
  buf.writeUInt16LE(2, 0x3e);
  info.copy(buf, infoOff);
  shstr.copy(buf, strOff);
  const sh = (i: number, name: number, off: number, size: number) => {
    const o = shoff + i * 64;
    buf.writeUInt32LE(name, o);
    buf.writeBigUInt64LE(BigInt(off), o + 0x18);
    buf.writeBigUInt64LE(BigInt(size), o + 0x20);
  };
  sh(1, 1, infoOff, info.length);
  sh(2, 10, strOff, shstr.length);
  return buf;
}

test('readModinfo reads depends= from the .modinfo section', () => {
  const m = readModinfo(fakeModule('license=GPL\0depends=virtio,virtio_ring\0name=virtio_blk\0'), 'virtio_blk.ko');
  assert.deepEqual(m.get('depends'), ['virtio,virtio_ring']);
  assert.deepEqual(m.get('name'), ['virtio_blk']);
  assert.throws(() => readModinfo(Buffer.from('not elf at all, padding padding padding padding padding padding'), 'x.ko'), /x\.ko.*ELF64/);
});

test('moduleName normalises file names', () => {
  assert.equal(moduleName('kernel/drivers/char/hw_random/virtio-rng.ko'), 'virtio_rng');
  assert.equal(moduleName('a/b/ext4.ko.zst'), 'ext4');
  assert.equal(moduleName('vsock.ko.xz'), 'vsock');
});
