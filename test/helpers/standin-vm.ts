import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TestDaemon } from './daemon.js';
import { fakeElfVmlinux } from './fake-vmlinux.js';
import { makeTar } from './oci.js';

/**
 * (test/helpers/firecracker-cli-fixture.ts does the same for a daemon it starts itself; this one
 * is for a daemon a test configures on its own.)
 * A kernel and an image for VMs run by the Firecracker stand-in (nothing boots: a stub ELF
 * `vmlinux` and a one-file rootfs), imported into `d` as `kernel` and `image`. `work` is a
 * scratch directory of the test.
 */
export async function importStandinImage(d: TestDaemon, work: string, kernel: string, image: string): Promise<void> {
  writeFileSync(join(work, 'vmlinux'), fakeElfVmlinux({ release: '6.1.0-fc' }));
  const k = await d.cli(['kernel', 'import', kernel, '--vmlinux', join(work, 'vmlinux'), '--distro', 'generic']);
  assert.equal(k.code, 0, k.stderr);
  writeFileSync(
    join(work, 'rootfs.tar'),
    makeTar([
      { path: 'etc/', type: 'dir' },
      { path: 'etc/hostname', data: 'standin\n' },
    ]),
  );
  const i = await d.cli(['image', 'import', image, '--rootfs-tar', join(work, 'rootfs.tar'), '--kernel-ref', kernel, '--size', '64M'], { timeoutMs: 180_000 });
  assert.equal(i.code, 0, i.stderr);
}
