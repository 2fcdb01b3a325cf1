import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkSymlinkTarget, normaliseEntryPath, staysInside } from '../../src/kernels/extract.js';
import { identifyHeader } from '../../src/kernels/identify.js';
import { KeyedLock } from '../../src/core/lock.js';
import { fakeElfVmlinux } from '../helpers/fake-vmlinux.js';

const code = (fn: () => unknown) => {
  try {
    fn();
  } catch (e: any) {
    return e.code;
  }
  return 'ok';
};

test('normaliseEntryPath: keeps in-tree paths, refuses absolute and escaping ones', () => {
  assert.equal(normaliseEntryPath('./vmlinux', 'k'), 'vmlinux');
  assert.equal(normaliseEntryPath('modules/6.1/', 'k'), 'modules/6.1');
  assert.equal(normaliseEntryPath('./', 'k'), '');
  assert.equal(normaliseEntryPath('a/../b', 'k'), 'b');
  for (const bad of ['/etc/passwd', '../x', 'a/../../x', '..', './../x', 'a\0b'])
    assert.equal(
      code(() => normaliseEntryPath(bad, 'k')),
      'E_UNSAFE_ENTRY',
      bad,
    );
});

test('checkSymlinkTarget: relative in-tree targets pass; absolute or escaping ones fail', () => {
  assert.equal(
    code(() => checkSymlinkTarget('modules/a/link', '../b/c', 'k')),
    'ok',
  );
  assert.equal(
    code(() => checkSymlinkTarget('link', 'vmlinux', 'k')),
    'ok',
  );
  assert.equal(
    code(() => checkSymlinkTarget('link', '/boot/vmlinuz', 'k')),
    'E_UNSAFE_ENTRY',
  );
  assert.equal(
    code(() => checkSymlinkTarget('modules/link', '../../etc', 'k')),
    'E_UNSAFE_ENTRY',
  );
  assert.equal(
    code(() => checkSymlinkTarget('link', '', 'k')),
    'E_UNSAFE_ENTRY',
  );
});

test('staysInside follows symlinks physically: a ".." after a link to "." escapes even if lexically inside', async () => {
  const root = mkdtempSync(join(tmpdir(), 'banger-si-'));
  try {
    mkdirSync(join(root, 'x'));
    symlinkSync('.', join(root, 'x', 'y'));
    symlinkSync('x/y/../..', join(root, 'l1'));
    symlinkSync('x/y/..', join(root, 'ok'));
    symlinkSync('loop2', join(root, 'loop1'));
    symlinkSync('loop1', join(root, 'loop2'));
    symlinkSync('missing/file', join(root, 'dangling'));
    const r = await Promise.all([staysInside(root, 'l1'), staysInside(root, 'ok'), staysInside(root, 'loop1'), staysInside(root, 'dangling')]);
    assert.deepEqual(r, [false, true, false, true]);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('identifyHeader: ELF (with machine), bzImage (with version string), or nothing', () => {
  assert.equal(identifyHeader(fakeElfVmlinux({ type: 3 })), undefined, 'ET_DYN: a program or library (PIE), never a vmlinux');
  assert.deepEqual(identifyHeader(fakeElfVmlinux()), { kind: 'elf', arch: 'x86_64' });
  assert.equal(identifyHeader(fakeElfVmlinux({ machine: 183 }))?.arch, 'aarch64');
  const bz = Buffer.alloc(0x1000);
  bz.write('HdrS', 0x202, 'latin1');
  bz.writeUInt16LE(0x400, 0x20e);
  bz.write('6.1.0-37-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP\0', 0x600, 'latin1');
  assert.deepEqual(identifyHeader(bz), { kind: 'bzimage', arch: 'x86_64', version: '6.1.0-37-cloud-amd64' });
  assert.equal(identifyHeader(Buffer.from('#!/bin/sh\necho not a kernel\n')), undefined);
});

test('KeyedLock serialises one key, lets other keys run, and survives a failing holder', async () => {
  const lock = new KeyedLock();
  const order: string[] = [];
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  const a = lock.run('k', async () => {
    order.push('a+');
    await sleep(30);
    order.push('a-');
    throw new Error('a failed');
  });
  const b = lock.run('k', async () => {
    order.push('b+');
    order.push('b-');
  });
  const c = lock.run('other', async () => {
    order.push('c');
  });
  await assert.rejects(a, /a failed/);
  await b;
  await c;
  assert.deepEqual(
    order.filter((x) => x !== 'c'),
    ['a+', 'a-', 'b+', 'b-'],
  );
  assert.ok(order.indexOf('c') < order.indexOf('a-'), 'another key is not blocked');
  assert.equal(lock.busy('k'), false);
  const ac = new AbortController();
  const holder = lock.run('k', () => sleep(50));
  const waiter = lock.run('k', async () => 'ran', ac.signal);
  ac.abort(new Error('gave up'));
  await assert.rejects(waiter, /gave up/);
  await holder;
});
