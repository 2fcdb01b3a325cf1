import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exec, type Exec } from '../../src/core/exec.js';
import { isBangerError } from '../../src/core/errors.js';
import type { VmNetwork } from '../../src/network/service.js';
import type { Subnet } from '../../src/network/subnet.js';
import { QemuDriver } from '../../src/vms/drivers/qemu/index.js';
import type { LaunchSpec, SnapshotFiles, VmHandle } from '../../src/vms/drivers/types.js';
import { snapshotFiles, vmFiles } from '../../src/vms/files.js';
import { launchSpec } from '../../src/vms/launch.js';
import type { VmRecord } from '../../src/vms/store.js';
import { busyboxFromDeb, createTestNet, hostTscKhz, type TestNet } from '../helpers/debian-boot.js';
import { cachedDeb, debianMirrorUnavailable, fetchTestKernel, startDebianMirror } from '../helpers/debian-mirror.js';
import { isRoot, missingTools } from '../helpers/daemon.js';

/**
 * The QEMU driver's snapshots on a real guest (Debian kernel + banger's initramfs + a busybox
 * root whose init counts): save with the guest running on, restore into another VM (own
 * directory, own overlay copy), the counter continues instead of a fresh boot; a restore into
 * a VM whose RAM is a shared file, saved again (device state only) and restored privately;
 * refusals (other shape, damaged state, a mount) start nothing. One cold boot for the file.
 */
const skip = !isRoot()
  ? 'needs root (network namespace, tap)'
  : (missingTools('qemu-system-x86_64', 'qemu-img', 'mkfs.ext4', 'ip', 'curl', 'dpkg-deb') ??
    (!existsSync('/dev/net/tun') ? 'no /dev/net/tun' : debianMirrorUnavailable()));

const INIT = `#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
echo "snapguest: booted"
httpd -p 80 -h /www
i=0
while :; do i=$((i+1)); echo $i > /www/count; echo "tick $i"; sleep 1; done
`;

let dir: string;
let kernelDir: string;
let base: string;
let net: TestNet;

before(
  async () => {
    if (skip) return;
    dir = mkdtempSync(join(tmpdir(), 'banger-snap-'));
    const mirror = await startDebianMirror();
    try {
      kernelDir = await fetchTestKernel(dir, mirror);
      const busybox = busyboxFromDeb(cachedDeb(mirror.packages.busybox)!, dir);
      const root = join(dir, 'rootfs');
      for (const d of ['bin', 'sbin', 'proc', 'www', 'tmp']) mkdirSync(join(root, d), { recursive: true });
      copyFileSync(busybox, join(root, 'bin', 'busybox'));
      chmodSync(join(root, 'bin', 'busybox'), 0o755);
      for (const a of ['sh', 'mount', 'httpd', 'sleep', 'echo']) symlinkSync('busybox', join(root, 'bin', a));
      writeFileSync(join(root, 'sbin', 'init'), INIT, { mode: 0o755 });
      base = join(dir, 'base.ext4');
      const r = spawnSync('mkfs.ext4', ['-q', '-F', '-b', '4096', '-O', '^orphan_file', '-d', root, base, '32M']);
      assert.equal(r.status, 0, r.stderr?.toString());
    } finally {
      await mirror.close();
    }
    net = createTestNet('snap');
  },
  { timeout: 600_000 },
);

after(
  async () => {
    for (const v of started) await v.driver.kill(v.handle).catch(() => undefined);
    net?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  },
  { timeout: 120_000 },
);

const INSTANCE = '5a9000000000';
/** Every VM this file set up (killed by pid file and QMP socket in `after`). */
const started: Array<{ driver: QemuDriver; handle: VmHandle }> = [];

function setup(
  name: string,
  o: { memoryMiB?: number; memoryFile?: string; mounts?: LaunchSpec['mounts'] } = {},
): { spec: LaunchSpec; handle: VmHandle; driver: QemuDriver } {
  const files = vmFiles(join(dir, name));
  mkdirSync(files.dir, { recursive: true });
  if (!existsSync(files.seed)) writeFileSync(files.seed, Buffer.alloc(1 << 20));
  const k = (n: string) => (existsSync(join(kernelDir, n)) ? join(kernelDir, n) : undefined);
  const vm = {
    id: `snap${name}`,
    name,
    ip: net.guestIp,
    spec: { vcpu: 1, memoryMiB: o.memoryMiB ?? 256, nat: false, firstBoot: false, rootDisk: { path: files.rootQcow2, format: 'qcow2' as const } },
  } as VmRecord & { ip: string };
  const nsExec: Exec = ((argv: string[], opts?: Parameters<Exec>[1]) => exec(['ip', 'netns', 'exec', net.ns, ...argv], opts)) as Exec;
  const driver = new QemuDriver(nsExec, { qemu: 'qemu-system-x86_64' });
  const spec = launchSpec({
    instance: INSTANCE,
    vm,
    kernel: { name: 'k', dir: kernelDir, vmlinuz: k('vmlinuz'), vmlinux: k('vmlinux'), initrd: k('initrd.img'), modulesImage: k('modules.ext4') },
    driver,
    files,
    net: { tap: net.tap, mac: '06:00:ac:1e:00:02' } as VmNetwork,
    subnet: { gateway: net.hostIp, netmask: '255.255.255.0', prefix: 24 } as Subnet,
    kvm: false,
    tscKhz: hostTscKhz(),
  });
  started.push({ driver, handle: { id: vm.id, name, files } });
  return {
    spec: { ...spec, ...(o.memoryFile ? { memoryFile: o.memoryFile } : {}), ...(o.mounts ? { mounts: o.mounts } : {}) },
    handle: { id: vm.id, name, files },
    driver,
  };
}

async function count(timeoutMs = 120_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const v = net.get('/count');
    if (v !== undefined && /^\d+$/.test(v.trim())) return Number(v.trim());
    await new Promise((r) => setTimeout(r, 300));
  }
  throw new Error('the guest did not answer /count');
}

async function countAbove(n: number): Promise<number> {
  for (;;) {
    const c = await count();
    if (c > n) return c;
    await new Promise((r) => setTimeout(r, 300));
  }
}

/** The last `tick N` the guest printed on its console. */
function lastTick(console: string): number {
  const all = [...readFileSync(console, 'utf8').matchAll(/tick (\d+)/g)];
  return Number(all.at(-1)?.[1]);
}

const qemuOf = (h: VmHandle) => spawnSync('pgrep', ['-f', h.files.qmp]).stdout.toString().trim();

test('qemu snapshots: save and run on, restore elsewhere, shared-RAM template, refusals start nothing', { skip, timeout: 600_000 }, async () => {
  // A: cold boot through the driver (RAM anonymous, as every VM)
  const a = setup('a');
  await a.driver.prepareRootDisk({ vm: a.handle, baseRootfs: base, cacheDir: join(dir, 'cache') });
  await a.driver.launch(a.spec);
  const before = await count();
  const s1: SnapshotFiles = snapshotFiles(join(dir, 'snap1'));
  // biome-ignore lint/suspicious/noThenProperty: the VmSnapshots.save option (a string, not a thenable)
  const meta1 = await a.driver.snapshots.save(a.handle, a.spec, s1, { then: 'resume' });
  assert.equal(meta1.sharedMemory, false);
  assert.equal(meta1.vcpu, 1);
  assert.ok(meta1.bytes.state > 1 << 20, `RAM travels in the stream (${meta1.bytes.state} bytes)`);
  assert.ok(existsSync(s1.disk) && existsSync(s1.meta) && !existsSync(s1.memory));
  const saved = Number(lastTick(join(dir, 'a', 'console.log')));
  assert.ok(saved >= before, `count at the save ${saved}`);
  await countAbove(saved); // A runs on after the save
  await a.driver.kill(a.handle);

  // Refusals: another shape, a damaged state, a mount. None leaves a process.
  const wrong = setup('wrong', { memoryMiB: 512 });
  copyFileSync(s1.disk, wrong.spec.disks[0]!.path);
  await assert.rejects(wrong.driver.snapshots.restore(wrong.spec, s1), (e) => isBangerError(e, 'E_CONFLICT') && /512 MiB/.test(e.message));
  assert.equal(qemuOf(wrong.handle), '', 'nothing started for a mismatched shape');
  const damaged = snapshotFiles(join(dir, 'damaged'));
  mkdirSync(damaged.dir);
  for (const f of ['state', 'disk', 'meta'] as const) copyFileSync(s1[f], damaged[f]);
  const buf = readFileSync(damaged.state);
  buf[buf.length >> 1] ^= 0xff;
  writeFileSync(damaged.state, buf);
  const dmg = setup('dmg');
  copyFileSync(damaged.disk, dmg.spec.disks[0]!.path);
  await assert.rejects(dmg.driver.snapshots.restore(dmg.spec, damaged), (e) => isBangerError(e, 'E_CONFLICT') && /damaged/.test(e.message));
  assert.equal(qemuOf(dmg.handle), '', 'nothing started for a damaged state');
  const mounted = setup('mnt', { mounts: [{ hostDir: dir, guestDir: '/mnt', readOnly: true, tag: 'banger0', kind: '9p' }] as LaunchSpec['mounts'] });
  assert.match(mounted.driver.snapshots.check(mounted.spec) ?? '', /--mount/);

  // B: restored from A's state into its own directory and overlay copy, RAM in a shared file
  const s2 = snapshotFiles(join(dir, 'snap2'));
  mkdirSync(s2.dir);
  const b = setup('b', { memoryFile: s2.memory });
  copyFileSync(s1.disk, b.spec.disks[0]!.path);
  await b.driver.snapshots.restore(b.spec, s1);
  const afterRestore = await count();
  assert.ok(afterRestore >= saved, `the counter continues (${afterRestore} ≥ ${saved})`);
  assert.doesNotMatch(readFileSync(b.handle.files.console, 'utf8'), /snapguest: booted/, 'no boot: the guest resumed');
  await countAbove(afterRestore);

  // B saved with its RAM left in the shared file: the stream is device state only; B exits
  // biome-ignore lint/suspicious/noThenProperty: the VmSnapshots.save option (a string, not a thenable)
  const meta2 = await b.driver.snapshots.save(b.handle, b.spec, s2, { then: 'exit' });
  assert.equal(meta2.sharedMemory, true);
  assert.ok(meta2.bytes.state < 1 << 20, `device state only (${meta2.bytes.state} bytes)`);
  assert.equal(meta2.bytes.memory, 256 << 20);
  assert.equal(qemuOf(b.handle), '', 'then: exit leaves no VMM');
  assert.ok(!existsSync(b.handle.files.qmp), 'its sockets are gone');
  const atExit = Number(lastTick(b.handle.files.console));

  // C: restored from the template, RAM mapped privately: the template file is never written
  const c = setup('c');
  copyFileSync(s2.disk, c.spec.disks[0]!.path);
  const memBefore = readFileSync(s2.memory);
  await c.driver.snapshots.restore(c.spec, s2);
  const cCount = await countAbove(atExit);
  assert.ok(cCount > atExit, `C continues from B's count (${cCount} > ${atExit})`);
  assert.ok(readFileSync(s2.memory).equals(memBefore), 'the template memory is copy-on-write, never written');
  await c.driver.kill(c.handle);
  assert.equal(qemuOf(c.handle), '');
});
