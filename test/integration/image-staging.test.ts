import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isRoot, missingTools } from '../helpers/daemon.js';
import { FakeRegistry } from '../helpers/fake-registry.js';
import { OciLayout, makeTar } from '../helpers/oci.js';
import { imageService, leftovers } from '../helpers/image-context.js';
import { ext4Stat } from '../helpers/image-ext4.js';
import { ramPrefix } from '../../src/images/staging.js';
import { ImageService } from '../../src/images/service.js';
import { KernelService } from '../../src/kernels/service.js';

/** RAM staging: a tmpfs that runs full falls back to disk; stale RAM staging is removed at start. */
const skip = !isRoot() ? 'needs root (mount tmpfs)' : missingTools('mount', 'umount', 'mkfs.ext4', 'e2fsck');

let work: string;
let small: string;
let fake: FakeRegistry;

before(
  async () => {
    if (skip) return;
    work = mkdtempSync(join(tmpdir(), 'banger-staging-'));
    small = join(work, 'small-tmpfs');
    mkdirSync(small);
    const r = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=66m', 'tmpfs', small], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const layout = new OciLayout(join(work, 'oci'));
    // 80 MiB of zeros gzip to ~80 KiB: the estimate (4x compressed + 64 MiB) says it fits in
    // the 66 MiB tmpfs, the tree does not
    const big = Buffer.alloc(80 * 1024 * 1024);
    layout.tag(
      layout.image([
        layout.layer(
          makeTar([
            { path: 'data/', type: 'dir' },
            { path: 'data/blob.bin', data: big },
          ]),
          'gzip',
        ),
      ]),
      'big',
    );
    fake = await new FakeRegistry(join(work, 'oci')).start();
  },
  { timeout: 600_000 },
);

after(
  async () => {
    await fake?.stop();
    if (small) {
      const r = spawnSync('umount', [small], { encoding: 'utf8' });
      if (r.status !== 0) spawnSync('umount', ['-l', small]); // never leak the mount
      assert.equal(r.status, 0, `umount ${small}: ${r.stderr} (a file left open in the RAM stage?)`);
    }
    if (work) rmSync(work, { recursive: true, force: true });
  },
  { timeout: 120_000 },
);

test('a RAM stage that runs out of space is retried on disk; nothing left in either place', { skip }, async () => {
  const { svc, ctx, cleanup } = imageService({ imageStaging: 'ram' });
  svc.ramDir = small;
  try {
    const msgs: string[] = [];
    const rec = await svc.pull({ ref: `${fake.host}/t/big:big`, name: 'big' }, { progress: (e) => e.message && msgs.push(e.message) });
    assert.ok(msgs.includes('RAM staging full: retrying on disk'), msgs.join('|'));
    assert.equal(ext4Stat(rec.rootfsPath, '/data/blob.bin')?.size, 80 * 1024 * 1024);
    await svc.settled();
    assert.deepEqual(readdirSync(small), [], 'RAM staging removed');
    assert.deepEqual(
      leftovers(ctx).filter((l) => !l.endsWith('big')),
      [],
    );
  } finally {
    cleanup();
  }
});

test('stale RAM staging dirs of this root are removed when the service starts; other roots are left alone', { skip }, async () => {
  const { svc, ctx, cleanup } = imageService();
  const mine = join('/dev/shm', `${ramPrefix(ctx.layout.root)}image-crashed-XYZ`);
  const other = join('/dev/shm', `${ramPrefix(ctx.layout.root + '-other')}image-x`);
  try {
    await svc.settled();
    mkdirSync(join(mine, 'rootfs'), { recursive: true });
    mkdirSync(other);
    const again = new ImageService(ctx, { kernels: new KernelService(ctx) });
    await again.settled();
    assert.equal(existsSync(mine), false);
    assert.equal(existsSync(other), true);
  } finally {
    rmSync(mine, { recursive: true, force: true });
    rmSync(other, { recursive: true, force: true });
    cleanup();
  }
});
