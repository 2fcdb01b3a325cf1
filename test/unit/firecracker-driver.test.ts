import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, openSync, readFileSync, rmSync, statSync, writeSync, closeSync, truncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exec } from '../../src/core/exec.js';
import { isBangerError } from '../../src/core/errors.js';
import { FirecrackerDriver } from '../../src/vms/drivers/firecracker/index.js';
import { fcInstanceId, firecrackerBootArgs, guestCidFor } from '../../src/vms/drivers/firecracker/driver.js';
import { rawRootCopy } from '../../src/vms/drivers/firecracker/disk.js';
import { describeExit } from '../../src/vms/drivers/firecracker/exit-codes.js';

const driver = new FirecrackerDriver(exec, { firecracker: 'firecracker' });

test('firecracker ownerOf: its own --id and --api-sock, nothing else', () => {
  const argv = [
    '/usr/bin/firecracker',
    '--api-sock',
    '/var/lib/banger/vms/box-1/firecracker.sock',
    '--id',
    fcInstanceId('0123456789ab', 'ffeeddccbbaa99887766'),
  ];
  assert.deepEqual(driver.ownerOf(argv), { instance: '0123456789ab', vm: 'box-1' });
  assert.equal(driver.ownerOf(['firecracker', '--api-sock', '/run/firecracker.socket', '--id', 'someone-else']), undefined);
  assert.equal(driver.ownerOf(['qemu-system-x86_64', '-name', 'banger:0123456789ab:box']), undefined);
  assert.ok(fcInstanceId('0123456789ab', 'ffeeddccbbaa99887766').length <= 64);
});

test('firecracker boot args: reboot=k and panic=1 replace the QEMU ones; the rest is kept in order', () => {
  assert.equal(firecrackerBootArgs('console=ttyS0 reboot=t ip=1::2:3::eth0:off init=/x'), 'console=ttyS0 ip=1::2:3::eth0:off init=/x reboot=k panic=1');
});

test('firecracker guest CID: ≥ 3, u32, stable per VM id', () => {
  for (const id of ['00000000aaaaaaaaaaaa', 'ffffffffffffffffffff', 'fffffffd000000000000', '12345678abcdef012345']) {
    const c = guestCidFor(id);
    assert.ok(c >= 3 && c <= 0xffffffff, `${id} → ${c}`);
    assert.equal(guestCidFor(id), c);
  }
  assert.notEqual(guestCidFor('00000001aaaaaaaaaaaa'), guestCidFor('00000002aaaaaaaaaaaa'));
});

test('firecracker bootKernel: the ELF vmlinux, else E_NOT_FOUND naming the kernel and what to pull', () => {
  assert.deepEqual(driver.bootKernel({ name: 'k', dir: '/k', vmlinux: '/k/vmlinux', vmlinuz: '/k/vmlinuz' }), { format: 'elf-vmlinux', path: '/k/vmlinux' });
  assert.throws(
    () => driver.bootKernel({ name: 'debian-cloud-amd64', dir: '/k', vmlinuz: '/k/vmlinuz' }),
    (e) => isBangerError(e, 'E_NOT_FOUND') && /debian-cloud-amd64.*only a bzImage/.test(e.message) && /generic/.test(e.hint ?? ''),
  );
});

test('firecracker exit codes in words', () => {
  assert.match(describeExit(152), /bad configuration/);
  assert.match(describeExit(148), /seccomp/);
  assert.match(describeExit(null, 'SIGKILL'), /SIGKILL/);
  assert.match(describeExit(77), /unknown/);
});

test('raw root copy: reflink where supported, else sparse; holes kept, content equal, base untouched, growth, never shrink', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'banger-fcdisk-'));
  try {
    const base = join(dir, 'base.ext4');
    const fd = openSync(base, 'w');
    writeSync(fd, Buffer.alloc(4096, 1), 0, 4096, 0);
    writeSync(fd, Buffer.alloc(4096, 2), 0, 4096, 64 << 20);
    closeSync(fd);
    truncateSync(base, 128 << 20);
    const before = readFileSync(base);
    const auto = await rawRootCopy(exec, base, join(dir, 'a.ext4'));
    assert.ok(auto === 'reflink' || auto === 'sparse');
    const sparse = await rawRootCopy(exec, base, join(dir, 's.ext4'), { forceSparse: true, sizeBytes: 256 << 20 });
    assert.equal(sparse, 'sparse');
    const s = statSync(join(dir, 's.ext4'));
    assert.equal(s.size, 256 << 20);
    assert.ok(s.blocks * 512 < 1 << 20, `sparse copy allocated ${s.blocks * 512} bytes`);
    assert.ok(readFileSync(join(dir, 'a.ext4')).equals(before));
    assert.ok(
      readFileSync(join(dir, 's.ext4'))
        .subarray(0, 128 << 20)
        .equals(before),
    );
    assert.ok(readFileSync(base).equals(before));
    await assert.rejects(rawRootCopy(exec, base, join(dir, 'small.ext4'), { sizeBytes: 1 << 20 }), (e) => isBangerError(e, 'E_INVALID'));
    await assert.rejects(rawRootCopy(exec, join(dir, 'absent'), join(dir, 'x.ext4')), (e) => isBangerError(e, 'E_NOT_FOUND'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
