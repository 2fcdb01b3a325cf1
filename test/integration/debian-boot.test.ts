import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cachedDeb, debianMirrorUnavailable, startDebianMirror, fetchTestKernel } from '../helpers/debian-mirror.js';
import { bootQemu, buildTestRootfs, busyboxFromDeb, createTestNet, hostTscKhz, type QemuGuest, type TestNet } from '../helpers/debian-boot.js';
import { isRoot, missingTools } from '../helpers/daemon.js';

/**
 * The Debian cloud kernel + banger's initramfs boots a real guest under QEMU microvm (TCG):
 * the initramfs loads the virtio modules, applies ip= itself, mounts root= and switch_roots
 * into the rootfs's init, whose httpd then answers at the ip= address inside our namespace.
 */
const skip = !isRoot()
  ? 'needs root (network namespace, tap)'
  : (missingTools('qemu-system-x86_64', 'mkfs.ext4', 'ip', 'curl', 'dpkg-deb') ??
    (!existsSync('/dev/net/tun') ? 'no /dev/net/tun' : debianMirrorUnavailable()));

let dir: string;
let kernelDir: string;
let rootfs: string;

// A TCG guest on a loaded 2-core runner can be 2-3x slower than the ~2-6 s we see idle.
const BOOT_TIMEOUT_MS = 120_000;
// TSC calibration can hang under TCG with ACPI on; telling the kernel the (host) TSC rate avoids it.
const TSC = `tsc_early_khz=${hostTscKhz()}`;

before(
  async () => {
    if (skip) return;
    dir = mkdtempSync(join(tmpdir(), 'banger-debboot-'));
    const mirror = await startDebianMirror();
    try {
      kernelDir = await fetchTestKernel(dir, mirror);
      rootfs = buildTestRootfs(dir, busyboxFromDeb(cachedDeb(mirror.packages.busybox)!, dir), 'banger-token-42');
    } finally {
      await mirror.close();
    }
  },
  { timeout: 600_000 },
);

after(
  () => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  },
  { timeout: 120_000 },
);

test('Debian kernel + banger initramfs boots a rootfs and answers at the ip= address', { skip, timeout: 300_000 }, async () => {
  let net: TestNet | undefined;
  let vm: QemuGuest | undefined;
  try {
    net = createTestNet('deb');
    vm = bootQemu({
      kernel: join(kernelDir, 'vmlinuz'),
      initrd: join(kernelDir, 'initrd.img'),
      rootfs,
      net,
      dir,
      append: `console=ttyS0 root=/dev/vda rw panic=-1 reboot=t ${TSC} ${net.ipArg('debguest')} init=/sbin/banger-test-init`,
    });
    const text = await vm.waitConsole(/banger-test-guest: ready/, BOOT_TIMEOUT_MS);
    assert.match(text, /banger-test-guest: init=\/sbin\/banger-test-init pid=1$/m, 'switch_root handed PID 1 to init=');
    assert.match(text, /banger-test-guest: hostname=debguest/, 'hostname from ip= applied before init');
    assert.ok(text.includes(`inet ${net.guestIp}/24`), 'address from ip= applied with the netmask as prefix');
    let body: string | undefined;
    const deadline = Date.now() + 60_000;
    while (body === undefined && Date.now() < deadline) {
      body = net.get('/index.html');
      if (body === undefined) await new Promise((r) => setTimeout(r, 500));
    }
    assert.equal(body?.trim(), 'banger-token-42', `guest answered at ${net.guestIp} from inside ${net.ns}`);
    assert.doesNotMatch(text, /banger-initramfs: warning/);
  } finally {
    await vm?.kill();
    net?.destroy();
  }
});

test("no root disk: the console shows banger-initramfs's clear error and the machine stops", { skip, timeout: 300_000 }, async () => {
  let vm: QemuGuest | undefined;
  try {
    vm = bootQemu({
      kernel: join(kernelDir, 'vmlinuz'),
      initrd: join(kernelDir, 'initrd.img'),
      dir,
      append: `console=ttyS0 root=/dev/vda rw panic=-1 reboot=t ${TSC} banger.rootwait=3`,
    });
    const text = await vm.waitConsole(/banger-initramfs: stopping the machine/, BOOT_TIMEOUT_MS);
    const line = text.split('\n').find((l) => l.startsWith('banger-initramfs: root device'));
    assert.ok(line, 'error line present');
    assert.match(line, /^banger-initramfs: root device \/dev\/vda did not appear after 3s; loaded modules: .*virtio_blk/);
    // poweroff -f (ACPI) ends the QEMU process
    const deadline = Date.now() + 60_000;
    while (!vm.exited() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 250));
    assert.ok(vm.exited(), 'qemu exited after the initramfs powered off');
  } finally {
    await vm?.kill();
  }
});
