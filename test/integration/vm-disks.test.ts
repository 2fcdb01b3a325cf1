import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exec } from '../../src/core/exec.js';
import { isBangerError } from '../../src/core/errors.js';
import { rawCowCopy } from '../../src/vms/disks.js';
import { QemuDriver } from '../../src/vms/drivers/qemu.js';
import { vmFiles } from '../../src/vms/files.js';
import { missingTools } from '../helpers/daemon.js';

test('rawCowCopy: reflink or sparse copy, identical bytes, grown on request, base untouched', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'banger-disk-'));
  try {
    const base = join(dir, 'base.ext4');
    writeFileSync(base, Buffer.concat([Buffer.from('head'), Buffer.alloc(1 << 20), Buffer.from('tail')]));
    const before = readFileSync(base);
    const method = await rawCowCopy(exec, base, join(dir, 'root.ext4'), { sizeBytes: 8 << 20 });
    assert.ok(method === 'reflink' || method === 'sparse');
    const copy = readFileSync(join(dir, 'root.ext4'));
    assert.equal(copy.length, 8 << 20);
    assert.deepEqual(copy.subarray(0, before.length), before);
    assert.ok(statSync(join(dir, 'root.ext4')).blocks * 512 < 8 << 20, 'the grown tail is sparse');
    await assert.rejects(rawCowCopy(exec, base, join(dir, 'small.ext4'), { sizeBytes: 10 }), (e) => isBangerError(e, 'E_INVALID') && /--disk-size/.test(e.message));
    assert.deepEqual(readFileSync(base), before);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('qemu prepare: qcow2 overlay backed by the raw base, size independent of the image', { skip: missingTools('qemu-img') }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'banger-disk-'));
  try {
    const sizes: number[] = [];
    for (const [i, gib] of [1, 8].entries()) {
      const base = join(dir, `base${i}.ext4`);
      writeFileSync(base, '');
      await exec(['truncate', '-s', `${gib}G`, base]);
      const files = vmFiles(join(dir, `vm${i}`));
      await exec(['mkdir', '-p', files.dir]);
      const d = await new QemuDriver(exec, { qemu: 'qemu-system-x86_64' }).prepare(files, base, {});
      assert.equal(d.format, 'qcow2');
      const info = JSON.parse((await exec(['qemu-img', 'info', '--output=json', d.path])).stdout);
      assert.equal(info['virtual-size'], gib * 2 ** 30);
      assert.equal(info['backing-filename'], base);
      assert.equal(info['backing-filename-format'], 'raw');
      sizes.push(statSync(d.path).size);
    }
    assert.ok(sizes.every((s) => s < 1 << 20), `overlays stay small: ${sizes}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
