import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TestDaemon } from './daemon.js';
import { makeTar } from './oci.js';

/**
 * A kernel and an image for VMs run by the Firecracker stand-in (nothing boots: a stub ELF
 * `vmlinux` and a one-file rootfs), imported into `d` as `kernel` and `image`. `work` is a
 * scratch directory of the test.
 */
export async function importStandinImage(d: TestDaemon, work: string, kernel: string, image: string): Promise<void> {
  const h = Buffer.alloc(128);
  h.write('\x7fELF', 0, 'latin1');
  h[5] = 1;
  h.writeUInt16LE(2, 16);
  h.writeUInt16LE(62, 18);
  writeFileSync(join(work, 'vmlinux'), Buffer.concat([h, Buffer.from('Linux version 6.1.0-fc (x@y) #1\n')]));
  const k = await d.cli(['kernel', 'import', kernel, '--vmlinux', join(work, 'vmlinux'), '--distro', 'generic']);
  assert.equal(k.code, 0, k.stderr);
  writeFileSync(join(work, 'rootfs.tar'), makeTar([{ path: 'etc/', type: 'dir' }, { path: 'etc/hostname', data: 'standin\n' }]));
  const i = await d.cli(['image', 'import', image, '--rootfs-tar', join(work, 'rootfs.tar'), '--kernel-ref', kernel, '--size', '64M'], { timeoutMs: 180_000 });
  assert.equal(i.code, 0, i.stderr);
}
