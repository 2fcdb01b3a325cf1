import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exec } from '../../src/core/exec.js';
import { QemuDriver } from '../../src/vms/drivers/qemu/index.js';
import { vmFiles } from '../../src/vms/files.js';
import { missingTools } from '../helpers/daemon.js';

test('qemu prepare: qcow2 overlay backed by the raw base, size independent of the image', { skip: missingTools('qemu-img') }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'banger-disk-'));
  // The per-image cache directory (layout.imageCacheDir); templates go there, not next to the base.
  const cacheDir = join(dir, 'cache');
  const vmOf = (files: ReturnType<typeof vmFiles>) => ({ id: 'id', name: 'vm', files });
  try {
    const sizes: number[] = [];
    for (const [i, gib] of [1, 8].entries()) {
      const base = join(dir, `base${i}.ext4`);
      writeFileSync(base, '');
      await exec(['truncate', '-s', `${gib}G`, base]);
      const files = vmFiles(join(dir, `vm${i}`));
      await exec(['mkdir', '-p', files.dir]);
      const d = await new QemuDriver(exec, { qemu: 'qemu-system-x86_64' }).prepareRootDisk({ vm: vmOf(files), baseRootfs: base, cacheDir });
      assert.equal(d.format, 'qcow2');
      const info = JSON.parse((await exec(['qemu-img', 'info', '--output=json', d.path])).stdout);
      assert.equal(info['virtual-size'], gib * 2 ** 30);
      assert.equal(info['backing-filename'], base);
      assert.equal(info['backing-filename-format'], 'raw');
      sizes.push(statSync(d.path).size);
    }
    assert.ok(
      sizes.every((s) => s < 1 << 20),
      `overlays stay small: ${sizes}`,
    );

    // The first VM of an image leaves a template in the image's cache directory; later VMs copy it. A
    // different size or a rebuilt base (new inode) gets its own template.
    const base = join(dir, 'base0.ext4');
    const templates = () => readdirSync(cacheDir).filter((n) => n.startsWith('.overlay-'));
    assert.equal(templates().length, 2, 'one template per base made so far');
    assert.deepEqual(
      readdirSync(dir).filter((n) => n.startsWith('.overlay-')),
      [],
      'nothing written next to the image',
    );
    const driver = new QemuDriver(exec, { qemu: 'qemu-system-x86_64' });
    const again = vmFiles(join(dir, 'again'));
    await exec(['mkdir', '-p', again.dir]);
    await driver.prepareRootDisk({ vm: vmOf(again), baseRootfs: base, cacheDir });
    assert.deepEqual(readFileSync(again.rootQcow2), readFileSync(vmFiles(join(dir, 'vm0')).rootQcow2));
    assert.equal(templates().length, 2);
    const big = vmFiles(join(dir, 'big'));
    await exec(['mkdir', '-p', big.dir]);
    await driver.prepareRootDisk({ vm: vmOf(big), baseRootfs: base, cacheDir, sizeBytes: 2 * 2 ** 30 });
    assert.equal(JSON.parse((await exec(['qemu-img', 'info', '--output=json', big.rootQcow2])).stdout)['virtual-size'], 2 * 2 ** 30);
    assert.equal(templates().length, 3);
    rmSync(base);
    await exec(['truncate', '-s', '1G', base]);
    const rebuilt = vmFiles(join(dir, 'rebuilt'));
    await exec(['mkdir', '-p', rebuilt.dir]);
    await driver.prepareRootDisk({ vm: vmOf(rebuilt), baseRootfs: base, cacheDir });
    assert.equal(templates().length, 4);
    assert.equal((await exec(['qemu-img', 'check', rebuilt.rootQcow2])).exitCode, 0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
