import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BangerError, ErrorCode, isBangerError } from '../../src/core/errors.js';
import { exec } from '../../src/core/exec.js';
import { stepOf } from '../../src/core/steps.js';
import type { HostProbe } from '../../src/core/host.js';
import { ImageService } from '../../src/images/service.js';
import { KernelService } from '../../src/kernels/service.js';
import { NetworkService } from '../../src/network/service.js';
import { QemuDriver } from '../../src/vms/drivers/qemu/index.js';
import type { DiskSpec, LaunchSpec, RootDiskRequest } from '../../src/vms/drivers/types.js';
import { VmService } from '../../src/vms/service.js';
import { isRoot, missingTools } from '../helpers/daemon.js';
import { cleanupAll, createNetns, nsRun } from '../helpers/netns.js';
import { netnsExec, tempContext } from '../helpers/vmctx.js';

/**
 * The boot plan through VmService with real disks, seed, lease and tap (in a namespace) and a
 * QEMU driver whose launch is recorded then failed: what `prepareRootDisk` returns is what is
 * launched, the row is written once with its MAC, the failure names its step, the qcow2
 * template lands in the layout's per-image cache, and `image rm` removes that cache.
 */
const skip = !isRoot() ? 'needs root (namespaces, taps, nft)' : missingTools('ip', 'nft', 'qemu-img', 'mkfs.ext4', 'debugfs', 'ssh-keygen');

/** A QEMU driver that puts the root disk somewhere of its own and fails at launch. */
class RecordingQemu extends QemuDriver {
  launched: LaunchSpec[] = [];
  override async prepareRootDisk(r: RootDiskRequest): Promise<DiskSpec> {
    const d = await super.prepareRootDisk(r);
    return { ...d, path: d.path + '.elsewhere' };
  }
  override async launch(spec: LaunchSpec): Promise<{ pid: number }> {
    this.launched.push(spec);
    throw new BangerError(ErrorCode.Vmm, 'injected launch failure');
  }
}

const host: HostProbe = { which: async (c) => `/usr/bin/${c}`, readFile: async () => 'flags : fpu\ncpu MHz : 2000.000\n', canReadWrite: async () => false };

let ns = '';
before(
  () => {
    if (!skip) ns = createNetns('vmplan');
  },
  { timeout: 600_000 },
);
after(() => cleanupAll());

test('create: the prepared DiskSpec is launched, the row is written once with its MAC, errors carry details.step, templates live in the image cache', {
  skip,
  timeout: 120_000,
}, async () => {
  const t = tempContext({ exec: netnsExec(ns), config: { network: { bridge: 'bgplan0', subnet: '10.83.0.0/24' } } });
  const { ctx } = t;
  try {
    const kdir = join(ctx.layout.kernels, 'k1');
    mkdirSync(kdir, { recursive: true });
    writeFileSync(join(kdir, 'vmlinuz'), 'x');
    const now = new Date().toISOString();
    ctx.db.prepare("INSERT INTO kernels (name, source, vmlinux_sha256, path, created_at) VALUES ('k1', 'import:test', 'x', ?, ?)").run(kdir, now);
    const idir = ctx.layout.imageDir('img');
    mkdirSync(idir, { recursive: true });
    const rootfs = join(idir, 'rootfs.ext4');
    await exec(['mkfs.ext4', '-q', '-F', '-b', '4096', rootfs, '16M']);
    ctx.db
      .prepare("INSERT INTO images (name, source_ref, rootfs_path, kernel_ref, from_registry, created_at) VALUES ('img', 'test', ?, 'k1', 1, ?)")
      .run(rootfs, now);
    const kernels = new KernelService(ctx);
    const images = new ImageService(ctx, { kernels });
    const network = new NetworkService(ctx, { enableForwarding: async () => void nsRun(ns, ['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']) });
    const driver = new RecordingQemu(exec, { qemu: 'qemu-system-x86_64' });
    const vms = new VmService(ctx, { kernels, images, network }, { drivers: { qemu: driver }, host });

    // The row as the launch saw it: inserted once, already with its MAC and reason.
    let rowAtLaunch: Record<string, unknown> | undefined;
    const launch = driver.launch.bind(driver);
    driver.launch = async (spec) => {
      rowAtLaunch = ctx.db.prepare('SELECT mac, tap, vmm, vmm_reason FROM vms WHERE name = ?').get('p1') as Record<string, unknown>;
      return launch(spec);
    };
    await assert.rejects(
      vms.create({ image: 'img', name: 'p1' }),
      (e) => isBangerError(e, ErrorCode.Vmm) && stepOf(e) === 'vmm' && /injected launch failure/.test(e.message),
    );
    const spec = driver.launched[0]!;
    assert.equal(spec.disks[0]!.path, join(ctx.layout.vmDir('p1'), 'root.qcow2.elsewhere'), 'the DiskSpec prepareRootDisk returned is the one launched');
    assert.equal(spec.kernel, join(kdir, 'vmlinuz'));
    assert.equal(spec.kernelFormat, 'bzImage');
    assert.equal(rowAtLaunch?.mac, spec.net.mac, 'the MAC was in the row from the start');
    assert.equal(rowAtLaunch?.tap, spec.net.tap);
    assert.match(String(rowAtLaunch?.vmm_reason), /^auto: qemu; accel tcg/);
    assert.deepEqual(ctx.db.prepare('SELECT * FROM vms').all(), [], 'unwound');
    assert.deepEqual(ctx.db.prepare('SELECT * FROM ip_leases').all(), [], 'lease released');

    // The qcow2 template is in the layout's per-image cache, not in the image's directory.
    const cache = ctx.layout.imageCacheDir('img');
    assert.equal(readdirSync(cache).filter((n) => n.startsWith('.overlay-') && n.endsWith('.qcow2')).length, 1);
    assert.deepEqual(readdirSync(idir), ['rootfs.ext4']);
    await images.rm('img', true);
    assert.equal(existsSync(cache), false, 'image rm removes its cache');
  } finally {
    t.cleanup();
  }
});
