import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openDb } from '../../src/core/db.js';
import { layout } from '../../src/core/paths.js';
import { MAX_PACKAGES, parsePreparedPackages, PreparedImages, type PreparedRecord } from '../../src/images/prepared.js';
import { ImageRepo } from '../../src/images/record.js';
import { addedPackages } from '../../src/vms/prepare.js';

test('parsePreparedPackages: "NAME VERSION" lines and apk\'s NAME-VER-rN; junk from the guest is dropped; bounded', () => {
  const text = [
    'openssh-server 1:9.2p1-2+deb12u7',
    'systemd 252.39-1~deb12u1',
    'openrc-0.54-r1',
    '',
    '   ',
    'rm -rf / now',
    '../../etc/passwd 1',
    `${'x'.repeat(300)} 1.0`,
    'name $(reboot)',
    'libc6:amd64 2.36-9',
  ].join('\n');
  assert.deepEqual(parsePreparedPackages(text), [
    { name: 'openssh-server', version: '1:9.2p1-2+deb12u7' },
    { name: 'systemd', version: '252.39-1~deb12u1' },
    { name: 'openrc', version: '0.54-r1' },
    { name: 'libc6:amd64', version: '2.36-9' },
  ]);
  const many = Array.from({ length: MAX_PACKAGES + 50 }, (_, i) => `p${i} 1`).join('\n');
  assert.equal(parsePreparedPackages(many).length, MAX_PACKAGES);
});

test('addedPackages: only the first-boot script\'s "added" lines of a builder console, CRs dropped; a line that only contains the marker is not one', () => {
  const console = [
    '[    3.1] random kernel line',
    'banger-first-boot: added systemd 252.39-1~deb12u1\r',
    'Setting up systemd ...',
    'banger-first-boot: added openssh-server 1:9.2p1-2+deb12u7',
    'junk banger-first-boot: added evil 1',
    'banger-first-boot: the install added 2 packages',
  ].join('\n');
  assert.equal(addedPackages(console), 'systemd 252.39-1~deb12u1\nopenssh-server 1:9.2p1-2+deb12u7');
  assert.deepEqual(
    parsePreparedPackages(addedPackages(console)).map((p) => p.name),
    ['systemd', 'openssh-server'],
  );
});

function withStore(fn: (p: PreparedImages, root: string, images: ImageRepo) => Promise<void>): Promise<void> {
  const root = mkdtempSync(join(tmpdir(), 'banger-prepared-'));
  const db = openDb(join(root, 'banger.db'));
  const l = layout(root, join(root, 'sock'));
  const images = new ImageRepo(db);
  images.insert(
    {
      name: 'deb',
      sourceRef: 'r',
      digest: 'sha256:' + 'a'.repeat(64),
      platform: 'linux/amd64',
      config: { env: [], entrypoint: [], cmd: [], user: '', workdir: '' },
      sizeBytes: 1,
      kernelRef: null,
      rootfsPath: '/x',
      fromRegistry: true,
      createdAt: 'now',
    },
    [],
  );
  return fn(new PreparedImages(db, l), root, images).finally(() => {
    db.close();
    rmSync(root, { recursive: true, force: true });
  });
}

function disk(root: string, image: string, id: string): string {
  const p = layout(root, '').preparedDisk(image, id);
  mkdirSync(join(p, '..'), { recursive: true });
  writeFileSync(p, 'ext4');
  return p;
}

const rec = (diskPath: string, key = 'k1'): PreparedRecord => ({
  image: 'deb',
  key,
  diskPath,
  sizeBytes: 4096,
  kernel: 'k',
  packages: [{ name: 'systemd', version: '252' }],
  durationMs: 1500,
  preparedAt: '2026-01-01T00:00:00Z',
  packageMirror: 'http://m/debian',
});

test('PreparedImages: one current record per image; a new prepare returns the one it superseded; the row goes with the image', () =>
  withStore(async (p, root, images) => {
    const a = disk(root, 'deb', 'a');
    assert.equal(p.record(rec(a)), undefined);
    assert.deepEqual(p.find('deb'), rec(a));
    const b = disk(root, 'deb', 'b');
    assert.equal(p.record(rec(b, 'k2'))?.diskPath, a, 'the superseded disk is handed back');
    assert.equal(p.find('deb')?.key, 'k2');
    assert.deepEqual(
      p.list().map((r) => r.diskPath),
      [b],
    );
    images.delete('deb');
    assert.equal(p.find('deb'), undefined, 'ON DELETE CASCADE with the image row');
  }));

test('PreparedImages.pruneStale keeps the current disk, disks a VM stands on and images being prepared; removes the rest', () =>
  withStore(async (p, root) => {
    const cur = disk(root, 'deb', 'cur');
    const used = disk(root, 'deb', 'used');
    const stale = disk(root, 'deb', 'stale');
    const orphan = disk(root, 'gone', 'x'); // an image removed while a crash left its disk
    const busy = disk(root, 'busy', 'y');
    p.record(rec(cur));
    const end = p.begin('busy');
    const r = await p.pruneStale([used]);
    assert.equal(r.removed, 2);
    assert.ok(existsSync(cur) && existsSync(used) && existsSync(busy));
    assert.ok(!existsSync(stale) && !existsSync(orphan));
    assert.ok(!existsSync(join(root, 'prepared', 'gone')), 'an empty image directory goes too');
    end();
    assert.equal((await p.pruneStale([used])).removed, 1, 'no longer busy');
  }));

test('PreparedImages.remove forgets the record and removes every file of the image', () =>
  withStore(async (p, root) => {
    const a = disk(root, 'deb', 'a');
    disk(root, 'deb', 'old');
    p.record(rec(a));
    await p.remove('deb');
    assert.equal(p.find('deb'), undefined);
    assert.ok(!existsSync(join(root, 'prepared', 'deb')));
    await p.remove('deb'); // idempotent
  }));
