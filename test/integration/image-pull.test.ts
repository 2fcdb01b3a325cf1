import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, utimesSync, writeFileSync, linkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isBangerError } from '../../src/core/errors.js';
import { isRoot, missingTools } from '../helpers/daemon.js';
import { TestRegistry } from '../helpers/registry.js';
import { OciLayout, gnuTar, makeTar } from '../helpers/oci.js';
import { ext4Ls, ext4Read, ext4Stat, ext4Xattr, fsck, sha256 } from '../helpers/image-ext4.js';
import { imageService, leftovers } from '../helpers/image-context.js';

const skip = !isRoot()
  ? 'needs root (chown, mknod, security.* xattrs)'
  : missingTools('docker-registry', 'skopeo', 'mkfs.ext4', 'debugfs', 'e2fsck', 'setfattr', 'tar', 'mknod');

const CAP = Buffer.from('0100000200200000000000000000000000000000', 'hex'); // cap_net_raw+ep
const NOTE = Buffer.from([0, 1, 0xfe, 0xff, 0x3d, 0x0a]);
const LONG = 'usr/share/' + 'deep-directory-name-'.repeat(4) + '/' + 'file-with-a-very-long-name-'.repeat(3) + '.txt';

let reg: TestRegistry;
let work: string;

function sh(argv: string[]): void {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${argv.join(' ')}: ${r.stderr}`);
}

/** Layer 1 (gzip, GNU tar over a staged tree) → layer 2 (plain, crafted) → layer 3 (zstd). */
function buildCraftedImage(dir: string): { layout: OciLayout } {
  const base = join(work, 'base');
  mkdirSync(join(base, 'etc'), { recursive: true });
  writeFileSync(join(base, 'etc', 'hostname'), 'base\n');
  mkdirSync(join(base, 'bin'));
  writeFileSync(join(base, 'bin', 'ping'), 'ping-binary'.repeat(100));
  sh(['chmod', '4755', join(base, 'bin', 'ping')]);
  sh(['setfattr', '-n', 'security.capability', '-v', '0s' + CAP.toString('base64'), join(base, 'bin', 'ping')]);
  sh(['setfattr', '-n', 'user.note', '-v', '0s' + NOTE.toString('base64'), join(base, 'bin', 'ping')]);
  mkdirSync(join(base, 'usr', 'lib'), { recursive: true });
  writeFileSync(join(base, 'usr', 'lib', 'libx.so'), 'lib');
  symlinkSync('usr/lib', join(base, 'lib'));
  mkdirSync(join(base, 'dev'));
  sh(['mknod', join(base, 'dev', 'null'), 'c', '1', '3']);
  sh(['mknod', join(base, 'dev', 'sda'), 'b', '8', '0']);
  mkdirSync(join(base, 'run'));
  sh(['mkfifo', join(base, 'run', 'initctl')]);
  mkdirSync(join(base, 'old'));
  writeFileSync(join(base, 'old', 'a'), 'a');
  writeFileSync(join(base, 'old', 'b'), 'b');
  mkdirSync(join(base, 'gone'));
  writeFileSync(join(base, 'gone', 'x'), 'x');
  writeFileSync(join(base, 'shared.txt'), 'shared content\n');
  linkSync(join(base, 'shared.txt'), join(base, 'shared-same-layer'));
  mkdirSync(join(base, 'home', 'user'), { recursive: true });
  writeFileSync(join(base, 'home', 'user', '.profile'), 'export X=1\n');
  sh(['chown', '-R', '1000:1000', join(base, 'home', 'user')]);
  sh(['chmod', '0750', join(base, 'home', 'user')]);
  sh(['chmod', '0640', join(base, 'home', 'user', '.profile')]);
  mkdirSync(join(base, 'tmp'));
  sh(['chmod', '1777', join(base, 'tmp')]);
  mkdirSync(join(base, 'srv'));
  sh(['chown', '0:50', join(base, 'srv')]);
  sh(['chmod', '2775', join(base, 'srv')]);
  mkdirSync(join(base, LONG, '..'), { recursive: true });
  writeFileSync(join(base, LONG), 'long name\n');
  utimesSync(join(base, 'etc', 'hostname'), 1_500_000_000, 1_500_000_000);
  mkdirSync(join(base, 'srv', 'data'));
  writeFileSync(join(base, 'srv', 'data', 'f'), 'f');
  utimesSync(join(base, 'srv', 'data'), 1_400_000_000, 1_400_000_000);

  const layout = new OciLayout(dir);
  const l1 = layout.layer(gnuTar(base), 'gzip');
  const l2 = layout.layer(
    makeTar([
      { path: '.wh.gone' },
      { path: 'old/.wh..wh..opq' },
      { path: 'old/c', data: 'c' },
      { path: 'shared-link', type: 'link', linkpath: 'shared.txt' },
      { path: 'etc/hostname', data: 'upper\n', mtime: 1_600_000_000 },
    ]),
    'none',
  );
  const l3 = layout.layer(
    makeTar([
      { path: 'opt/', type: 'dir' },
      { path: 'opt/zstd.txt', data: 'from a zstd layer\n', uid: 33, gid: 33, mode: 0o600 },
    ]),
    'zstd',
  );
  const img = layout.image([l1, l2, l3], {
    config: { Env: ['PATH=/usr/bin:/bin', 'LANG=C.UTF-8'], Entrypoint: ['/bin/ping'], Cmd: ['localhost'], User: '1000', WorkingDir: '/home/user' },
  });
  layout.tag(img, 'v1');
  return { layout };
}

before(
  async () => {
    if (skip) return;
    work = mkdtempSync(join(tmpdir(), 'banger-oci-'));
    reg = await TestRegistry.start();
    buildCraftedImage(join(work, 'oci'));
    await reg.push(join(work, 'oci'), 'v1', 'test/crafted:v1');
  },
  { timeout: 600_000 },
);

after(
  async () => {
    await reg?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  },
  { timeout: 120_000 },
);

test('pull of a crafted 3-layer image gives an ext4 matching the layers file by file', { skip }, async () => {
  const { svc, ctx, cleanup } = imageService();
  try {
    const events: string[] = [];
    const rec = await svc.pull({ ref: `${reg.host}/test/crafted:v1` }, { progress: (e) => events.push(`${e.stage}${e.done ? ':done' : ''}`) });
    assert.equal(rec.name, 'crafted-v1');
    assert.equal(rec.sourceRef, `${reg.host}/test/crafted:v1`);
    assert.match(rec.digest, /^sha256:[a-f0-9]{64}$/);
    assert.deepEqual(rec.config, {
      env: ['PATH=/usr/bin:/bin', 'LANG=C.UTF-8'],
      entrypoint: ['/bin/ping'],
      cmd: ['localhost'],
      user: '1000',
      workdir: '/home/user',
    });
    assert.equal(rec.sizeBytes, 1024 ** 3, '1 GiB floor');
    assert.ok(events.includes('layer:done') && events.includes('mkfs:done'), events.join(','));
    const img = rec.rootfsPath;
    assert.equal(fsck(img), 0);

    const ping = ext4Stat(img, '/bin/ping')!;
    assert.equal(ping.mode & 0o7777, 0o4755, 'setuid kept (chmod after chown)');
    assert.equal(ping.size, 'ping-binary'.length * 100);
    assert.deepEqual(ext4Xattr(img, '/bin/ping', 'security.capability'), CAP, 'binary security.capability intact');
    assert.deepEqual(ext4Xattr(img, '/bin/ping', 'user.note'), NOTE);

    assert.equal(ext4Read(img, '/etc/hostname').toString(), 'upper\n', 'upper layer wins');
    assert.equal(ext4Stat(img, '/etc/hostname')!.mtime, 1_600_000_000);
    assert.equal(ext4Stat(img, '/srv/data')!.mtime, 1_400_000_000, 'directory mtime applied after its content');
    assert.equal(ext4Stat(img, '/gone'), undefined, '.wh.gone removed the lower directory');
    assert.deepEqual(ext4Ls(img, '/old').sort(), ['c'], 'opaque directory hides lower entries');

    const shared = ext4Stat(img, '/shared.txt')!;
    assert.equal(ext4Stat(img, '/shared-link')!.inode, shared.inode, 'hard link across layers');
    assert.equal(ext4Stat(img, '/shared-same-layer')!.inode, shared.inode, 'hard link within a layer');
    assert.equal(shared.links, 3);

    const lib = ext4Stat(img, '/lib')!;
    assert.equal(lib.type, 'symlink');
    assert.equal(lib.linkTarget, 'usr/lib');
    const nul = ext4Stat(img, '/dev/null')!;
    assert.equal(nul.type, 'character special');
    assert.deepEqual(nul.device, [1, 3]);
    assert.deepEqual(ext4Stat(img, '/dev/sda')!.device, [8, 0]);
    assert.equal(ext4Stat(img, '/dev/sda')!.type, 'block special');
    assert.equal(ext4Stat(img, '/run/initctl')!.type, 'FIFO');

    const home = ext4Stat(img, '/home/user')!;
    assert.deepEqual([home.uid, home.gid, home.mode & 0o7777], [1000, 1000, 0o750]);
    const prof = ext4Stat(img, '/home/user/.profile')!;
    assert.deepEqual([prof.uid, prof.gid, prof.mode & 0o7777], [1000, 1000, 0o640]);
    assert.equal(ext4Stat(img, '/tmp')!.mode & 0o7777, 0o1777, 'sticky');
    const srv = ext4Stat(img, '/srv')!;
    assert.deepEqual([srv.gid, srv.mode & 0o7777], [50, 0o2775], 'setgid dir');
    assert.equal(ext4Read(img, '/' + LONG).toString(), 'long name\n', 'long PAX name');
    const z = ext4Stat(img, '/opt/zstd.txt')!;
    assert.deepEqual([z.uid, z.gid, z.mode & 0o7777], [33, 33, 0o600]);
    assert.equal(sha256(ext4Read(img, '/opt/zstd.txt')), sha256('from a zstd layer\n'));

    // records
    assert.deepEqual(svc.get('crafted-v1'), rec);
    assert.equal(svc.list().length, 1);
    assert.equal(svc.show('crafted-v1').blobs.length, 5, 'manifest + config + 3 layers referenced');
    assert.ok(svc.show('crafted-v1').blobs.includes(rec.digest), 'the manifest is one of them');
    await svc.settled();
    assert.deepEqual(
      leftovers(ctx).filter((l) => !l.startsWith('images/') && !l.startsWith('row:')),
      [],
    );
  } finally {
    cleanup();
  }
});

test('pulling an existing name: up to date is a no-op, anything else is refused; rm removes the image; rm of a used image needs --force', {
  skip,
}, async () => {
  const { svc, ctx, cleanup } = imageService();
  try {
    const rec = await svc.pull({ ref: `${reg.host}/test/crafted:v1`, name: 'one', sizeBytes: 64 * 1024 * 1024 });
    assert.equal(rec.sizeBytes, 64 * 1024 * 1024, '--size honoured');
    const stages: string[] = [];
    const again = await svc.pull({ ref: `${reg.host}/test/crafted:v1`, name: 'one' }, { progress: (e) => stages.push(e.message ?? '') });
    assert.deepEqual(again, rec, 'same reference, same digest: the existing image, not rebuilt');
    assert.ok(
      stages.some((m) => /is up to date/.test(m)),
      stages.join(' | '),
    );
    await assert.rejects(
      svc.pull({ ref: `${reg.host}/test/crafted:v1`, name: 'one', sizeBytes: 128 * 1024 * 1024 }),
      (e: unknown) => isBangerError(e, 'E_EXISTS') && /other settings/.test(e.message),
    );
    await assert.rejects(
      svc.pull({ ref: `${reg.host}/test/crafted@${rec.digest}`, name: 'one' }),
      (e: unknown) => isBangerError(e, 'E_EXISTS') && /one/.test(e.message) && /banger image rm one/.test(e.hint ?? ''),
    );
    await assert.rejects(
      svc.pull({ ref: `${reg.host}/test/crafted:v1`, name: 'tiny', sizeBytes: 8192 }),
      (e: unknown) => isBangerError(e, 'E_INVALID') && /--size 8\.0 KiB is too small/.test(e.message),
    );
    await svc.settled();
    assert.deepEqual(
      leftovers(ctx).filter((l) => !l.endsWith('one')),
      [],
      'a refused --size leaves nothing',
    );
    ctx.db
      .prepare("INSERT INTO vms (name, id, image_name, kernel_name, spec_json, vmm, created_at) VALUES ('vm1', 'id1', 'one', 'k', '{}', 'qemu', 'now')")
      .run();
    await assert.rejects(svc.rm('one'), (e: unknown) => isBangerError(e, 'E_IN_USE') && /vm1/.test(e.message));
    assert.ok(svc.get('one'));
    await svc.rm('one', true);
    await svc.settled();
    assert.throws(
      () => svc.get('one'),
      (e: unknown) => isBangerError(e, 'E_NOT_FOUND') && e.hint === "see 'banger image list'",
    );
    assert.deepEqual(leftovers(ctx), []);
    const pr = await svc.pruneCache();
    assert.equal(pr.removed, 5, 'all five blobs (manifest, config, 3 layers) were unreferenced');
  } finally {
    cleanup();
  }
});

test('a cached image pulls again under a new name without downloading blobs; identical builds share the ext4', { skip }, async () => {
  const { svc, ctx, cleanup } = imageService();
  try {
    const first = await svc.pull({ ref: `${reg.host}/test/crafted:v1`, name: 'first' });
    const blobsBefore = (await svc.store.list()).map((b) => b.digest).sort();
    const events: string[] = [];
    const second = await svc.pull(
      { ref: `${reg.host}/test/crafted:v1`, name: 'second', reuse: false },
      { progress: (e) => e.message && events.push(e.message) },
    );
    assert.ok(
      events.some((m) => m.includes('extracting (cached)')),
      'layers came from the cache',
    );
    assert.ok(!events.some((m) => m === 'downloading'), 'nothing downloaded');
    assert.deepEqual((await svc.store.list()).map((b) => b.digest).sort(), blobsBefore);
    assert.notEqual(ext4Stat(second.rootfsPath, '/bin/ping')?.inode, undefined);
    const ev3: string[] = [];
    const third = await svc.pull({ ref: `${reg.host}/test/crafted:v1`, name: 'third' }, { progress: (e) => e.message && ev3.push(e.message) });
    assert.ok(
      ev3.some((m) => m.includes('ext4 re-used')),
      ev3.join('|'),
    );
    const { statSync } = await import('node:fs');
    assert.ok([statSync(first.rootfsPath).ino, statSync(second.rootfsPath).ino].includes(statSync(third.rootfsPath).ino), 'hard link of an identical build');
    assert.equal(third.sizeBytes, first.sizeBytes);
    await svc.rm('first');
    await svc.rm('second');
    assert.equal(fsck(third.rootfsPath), 0, 'the re-used ext4 survives removal of the image it came from');
    assert.equal((await svc.pruneCache()).removed, 0, 'blobs still referenced by "third"');
    await svc.settled();
    assert.ok(
      leftovers(ctx).every((l) => l === 'images/third' || l === 'row:third'),
      leftovers(ctx).join(','),
    );
  } finally {
    cleanup();
  }
});

test('opaque whiteout keeps what the same layer put in the directory, even below it', { skip }, async () => {
  const { OciLayout: L } = await import('../helpers/oci.js');
  const dir = join(work, 'oci-opq');
  const layout = new L(dir);
  const l1 = layout.layer(
    makeTar([
      { path: 'd/', type: 'dir' },
      { path: 'd/lower', data: 'x' },
      { path: 'd/sub/', type: 'dir' },
      { path: 'd/sub/lower2', data: 'y' },
    ]),
    'none',
  );
  const l2 = layout.layer(makeTar([{ path: 'd/new/deep/f', data: 'z' }, { path: 'd/.wh..wh..opq' }]), 'none');
  layout.tag(layout.image([l1, l2]), 'opq');
  await reg.push(dir, 'opq', 'test/opq:1');
  const { svc, cleanup } = imageService();
  try {
    const rec = await svc.pull({ ref: `${reg.host}/test/opq:1` });
    assert.deepEqual(ext4Ls(rec.rootfsPath, '/d'), ['new']);
    assert.equal(ext4Read(rec.rootfsPath, '/d/new/deep/f').toString(), 'z');
  } finally {
    cleanup();
  }
});

test('image import --rootfs-dir copies the tree (never modifying the source) and builds an ext4', { skip }, async () => {
  const src = join(work, 'import-src');
  mkdirSync(join(src, 'etc'), { recursive: true });
  writeFileSync(join(src, 'etc', 'hostname'), 'from-dir\n');
  sh(['chown', '123:456', join(src, 'etc', 'hostname')]);
  const { svc, ctx, cleanup } = imageService();
  try {
    const rec = await svc.importImage({ name: 'fromdir', rootfsDir: src });
    assert.equal(rec.fromRegistry, false);
    assert.equal(rec.sourceRef, `dir:${src}`);
    const st = ext4Stat(rec.rootfsPath, '/etc/hostname')!;
    assert.deepEqual([st.uid, st.gid], [123, 456]);
    assert.equal(ext4Read(rec.rootfsPath, '/etc/hostname').toString(), 'from-dir\n');
    assert.deepEqual((await import('node:fs')).readdirSync(src), ['etc'], 'source untouched by the guest injection');
    await assert.rejects(
      svc.importImage({ name: 'rel', rootfsDir: 'relative/path' }),
      (e: unknown) => isBangerError(e, 'E_INVALID') && /must be an absolute path/.test(e.message),
    );
    await svc.settled();
    assert.deepEqual(
      leftovers(ctx).filter((l) => !l.endsWith('fromdir')),
      [],
    );
  } finally {
    cleanup();
  }
});
