import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { BangerError, ErrorCode, isBangerError } from '../../src/core/errors.js';
import { KernelService } from '../../src/kernels/service.js';
import { ImageService } from '../../src/images/service.js';
import { NetworkService } from '../../src/network/service.js';
import { VmService } from '../../src/vms/service.js';
import { QemuDriver } from '../../src/vms/drivers/qemu/index.js';
import type { LaunchSpec } from '../../src/vms/drivers/types.js';
import { realHost, type HostProbe } from '../../src/core/host.js';
import { detectCgroups, type CgroupHost } from '../../src/core/cgroup.js';
import { exec } from '../../src/core/exec.js';
import { cleanupAll, createNetns, nsLinks, nsRun } from '../helpers/netns.js';
import { isRoot, missingTools } from '../helpers/daemon.js';
import { netnsExec, tempContext } from '../helpers/vmctx.js';

/**
 * VmService without a guest: the real disk, seed, key, lease, tap and NAT steps run (inside a
 * namespace), the VMM start fails on purpose, and everything must be unwound newest first.
 */
const skip = !isRoot() ? 'needs root (namespaces, taps, nft)' : missingTools('ip', 'nft', 'qemu-img', 'mkfs.ext4', 'debugfs', 'ssh-keygen');

class FailingQemu extends QemuDriver {
  launched?: LaunchSpec;
  /** Whether each of the VM's cgroup.procs files existed when the VMM was launched. */
  groupAtLaunch?: boolean[];
  override async launch(spec: LaunchSpec): Promise<{ pid: number }> {
    this.launched = spec;
    this.groupAtLaunch = spec.cgroup?.procs.map((p) => existsSync(p));
    throw new BangerError(ErrorCode.Vmm, 'step vmm-start: injected failure');
  }
}

const host: HostProbe = {
  which: async (c) => `/usr/bin/${c}`,
  readFile: async () => 'flags : fpu\ncpu MHz : 2000.000\n',
  canReadWrite: async () => false,
};

let ns = '';
before(
  () => {
    if (!skip) ns = createNetns('vmundo');
  },
  { timeout: 600_000 },
);
after(() => cleanupAll());

function setup(bridge = 'bgundo0', subnet = '10.81.0.0/24') {
  const t = tempContext({ exec: netnsExec(ns), config: { network: { bridge, subnet } } });
  const { ctx } = t;
  const kdir = join(ctx.layout.kernels, 'k1');
  mkdirSync(kdir, { recursive: true });
  writeFileSync(join(kdir, 'vmlinuz'), 'not really a kernel');
  const now = new Date().toISOString();
  ctx.db.prepare("INSERT INTO kernels (name, source, vmlinux_sha256, has_initrd, path, created_at) VALUES ('k1', 'import:test', 'x', 0, ?, ?)").run(kdir, now);
  const idir = join(ctx.layout.images, 'img');
  mkdirSync(idir, { recursive: true });
  const rootfs = join(idir, 'rootfs.ext4');
  /** Image 'img' (an empty ext4 of `size`) and the VM service over a QEMU driver whose start fails. */
  const services = async (o: { size: string; fromRegistry: boolean; network?: NetworkService; cgroups?: CgroupHost }) => {
    await exec(['mkfs.ext4', '-q', '-F', '-b', '4096', rootfs, o.size]);
    ctx.db
      .prepare("INSERT INTO images (name, source_ref, rootfs_path, kernel_ref, from_registry, created_at) VALUES ('img', 'test', ?, 'k1', ?, ?)")
      .run(rootfs, o.fromRegistry ? 1 : 0, now);
    const kernels = new KernelService(ctx);
    const images = new ImageService(ctx, { kernels });
    const driver = new FailingQemu(exec, { qemu: 'qemu-system-x86_64' });
    const vms = new VmService(ctx, { kernels, images, network: o.network ?? new NetworkService(ctx) }, { drivers: { qemu: driver }, host, cgroups: o.cgroups });
    return { vms, driver };
  };
  return { t, ctx, rootfs, services };
}

test('a create whose VMM fails unwinds tap, NAT, lease, record, disks, keys, ssh config', { skip, timeout: 120_000 }, async () => {
  const { t, ctx, rootfs, services } = setup();
  try {
    const network = new NetworkService(ctx, { enableForwarding: async () => void nsRun(ns, ['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']) });
    const { vms, driver } = await services({ size: '64M', fromRegistry: true, network });
    const stages: string[] = [];
    await assert.rejects(
      vms.create({ image: 'img', name: 'doomed', nat: true }, { progress: (e) => stages.push(`${e.stage}${e.done ? ':done' : ''}`) }),
      (e) => isBangerError(e, ErrorCode.Vmm) && /injected failure/.test(e.message),
    );
    // It really got as far as the VMM: disks, seed and network (made side by side) were done, then
    // removed; `warm` is the stage line saying why it boots cold (this image has no warm snapshot).
    assert.deepEqual(stages.filter((s) => s.endsWith(':done')).sort(), ['disk:done', 'network:done', 'seed:done', 'warm:done']);
    assert.equal(stages.at(-1), 'vmm');
    const spec = driver.launched!;
    assert.match(spec.cmdline, /ip=10\.81\.0\.2::10\.81\.0\.1:255\.255\.255\.0:doomed:eth0:off init=\/usr\/local\/libexec\/banger-first-boot/);
    assert.match(spec.cmdline, /tsc_early_khz=2000000/);
    assert.equal(spec.kvm, false);
    assert.deepEqual(
      spec.disks.map((d) => d.id),
      ['root', 'seed'],
    );

    assert.deepEqual(
      nsLinks(ns).filter((l) => l.ifname.startsWith('tap-')),
      [],
      'no tap left',
    );
    assert.doesNotMatch(nsRun(ns, ['nft', 'list', 'ruleset']), /banger:[0-9a-f]{12}:vm:/, 'no NAT rule left');
    assert.deepEqual(ctx.db.prepare('SELECT * FROM ip_leases').all(), [], 'no lease left');
    assert.deepEqual(ctx.db.prepare('SELECT * FROM vms').all(), [], 'no record left');
    assert.deepEqual(existsSync(ctx.layout.vms) ? readdirSync(ctx.layout.vms) : [], [], 'no VM directory left');
    assert.equal(readFileSync(join(ctx.layout.ssh, 'known_hosts'), 'utf8'), '', 'host key unpinned');
    assert.doesNotMatch(readFileSync(join(ctx.layout.ssh, 'config'), 'utf8'), /doomed/);
    assert.deepEqual(
      readdirSync(ctx.layout.tmp).filter((n) => n.startsWith('seed-')),
      [],
      'no seed staging dir left',
    );
    assert.ok(existsSync(rootfs), 'the base image is untouched');
  } finally {
    t.cleanup();
  }
});

test('limits: the VMM cgroup is made before launch and removed by the unwind of a failed create; --cpu-quota without a cgroup is refused up front', {
  skip,
  timeout: 120_000,
}, async () => {
  const cg = await detectCgroups(realHost.readFile);
  assert.notEqual(cg.version, 0, 'this host offers a cgroup hierarchy (v1 or v2)');
  const { t, ctx, services } = setup('bgundo3', '10.84.0.0/24');
  try {
    const network = new NetworkService(ctx);
    const { vms, driver } = await services({ size: '64M', fromRegistry: true, network, cgroups: cg });
    await assert.rejects(vms.create({ image: 'img', name: 'capped', cpuQuota: 0.5, diskIops: 10 }), (e) => isBangerError(e, ErrorCode.Vmm));
    const spec = driver.launched!;
    assert.ok(spec.cgroup && spec.cgroup.procs.length > 0, 'the VMM was given its group');
    assert.deepEqual(spec.cgroup.limits, { memoryBytes: (1024 + 1024) * 1048576, pids: 1024, cpuQuota: 0.5 });
    assert.deepEqual(spec.diskLimits, { iops: 10 });
    assert.deepEqual(
      driver.groupAtLaunch,
      spec.cgroup.procs.map(() => true),
      'the group existed before the VMM started',
    );
    for (const p of spec.cgroup.procs) assert.equal(existsSync(dirname(p)), false, `${dirname(p)} left after the unwind`);
    assert.deepEqual(ctx.db.prepare('SELECT * FROM vms').all(), []);
  } finally {
    t.cleanup();
  }
  const s2 = setup('bgundo2', '10.83.0.0/24');
  try {
    const none = await s2.services({ size: '64M', fromRegistry: true, cgroups: { version: 0, reason: 'no cgroup2 file system mounted' } });
    await assert.rejects(
      none.vms.create({ image: 'img', name: 'capped2', cpuQuota: 1 }),
      (e) => isBangerError(e, ErrorCode.Platform) && /--cpu-quota needs a cgroup.*no cgroup2 file system mounted/.test(e.message),
    );
    assert.equal(none.driver.launched, undefined, 'nothing launched');
    assert.deepEqual(s2.ctx.db.prepare('SELECT * FROM vms').all(), [], 'nothing recorded');
  } finally {
    s2.t.cleanup();
  }
});

test('bad input is refused before anything is made: unknown image, unknown kernel, bad size', { skip, timeout: 60_000 }, async () => {
  const { t, ctx, services } = setup();
  try {
    const { vms } = await services({ size: '16M', fromRegistry: false });
    await assert.rejects(vms.create({ image: 'nope' }), (e) => isBangerError(e, ErrorCode.NotFound) && /image 'nope'/.test(e.message));
    await assert.rejects(vms.create({ image: 'img', kernel: 'nok' }), (e) => isBangerError(e, ErrorCode.NotFound) && /kernel 'nok'/.test(e.message));
    await assert.rejects(vms.create({ image: 'img', diskSize: 'lots' }), (e) => isBangerError(e, ErrorCode.Invalid) && /--disk-size 'lots'/.test(e.message));
    await assert.rejects(
      vms.create({ image: 'img', diskSize: '1M' }),
      (e) => isBangerError(e, ErrorCode.Invalid) && /--disk-size .* smaller than the image/.test(e.message),
    );
    assert.deepEqual(ctx.db.prepare('SELECT * FROM vms').all(), []);
    assert.deepEqual(ctx.db.prepare('SELECT * FROM ip_leases').all(), []);
    assert.deepEqual(existsSync(ctx.layout.vms) ? readdirSync(ctx.layout.vms) : [], []);
    assert.deepEqual(
      nsLinks(ns).filter((l) => l.ifname.startsWith('tap-')),
      [],
    );
  } finally {
    t.cleanup();
  }
});

test('--no-start creates a stopped VM; rm removes it; firstBoot comes from the image rootfs', { skip, timeout: 60_000 }, async () => {
  const { t, ctx, rootfs, services } = setup();
  try {
    const { vms } = await services({ size: '16M', fromRegistry: false });
    const v = await vms.create({ image: 'img', name: 'later', start: false, diskSize: '64M', workDisk: '32M' });
    assert.equal(v.running, false);
    assert.equal(v.state, 'stopped');
    assert.equal(v.spec.firstBoot, false, 'an imported rootfs without the first-boot script boots its own init');
    assert.equal(v.ip, '10.81.0.2');
    const img = JSON.parse((await exec(['qemu-img', 'info', '--output=json', v.spec.rootDisk.path])).stdout);
    assert.equal(img['virtual-size'], 64 * 1024 * 1024, '--disk-size grows the overlay');
    assert.equal(img['backing-filename'], rootfs);
    assert.ok(existsSync(join(v.dir, 'work.ext4')));
    assert.match(readFileSync(join(ctx.layout.ssh, 'known_hosts'), 'utf8'), /^10\.81\.0\.2,later,later\.vm ssh-ed25519 /);
    assert.match(readFileSync(join(ctx.layout.ssh, 'config'), 'utf8'), /Host later\.vm\n {2}HostName 10\.81\.0\.2/);
    // The seed disk carries the contract files.
    const ls = await exec(['debugfs', '-R', 'ls -p /ssh', join(v.dir, 'seed.ext4')]);
    assert.match(ls.stdout, /ssh_host_ed25519_key\//);
    const env = await exec(['debugfs', '-R', 'cat /network.env', join(v.dir, 'seed.ext4')]);
    assert.match(env.stdout, /BANGER_IP=10\.81\.0\.2\nBANGER_PREFIX=24\nBANGER_GATEWAY=10\.81\.0\.1\n/);
    const label = await exec(['e2label', join(v.dir, 'seed.ext4')]);
    assert.equal(label.stdout.trim(), 'BANGERSEED');
    await vms.rm(['later']);
    assert.deepEqual(ctx.db.prepare('SELECT * FROM ip_leases').all(), []);
    assert.equal(existsSync(v.dir), false);
    assert.equal(readFileSync(join(ctx.layout.ssh, 'known_hosts'), 'utf8'), '');
  } finally {
    t.cleanup();
  }
});

test('-p and --mount are unwound with a failed create (port released, virtiofsd gone); --keep-on-failure keeps the VM and says so', {
  skip,
  timeout: 120_000,
}, async () => {
  const { t, ctx, services } = setup('bgundo1', '10.82.0.0/24'); // its own instance: its own bridge
  const { mkdtempSync, rmSync } = await import('node:fs');
  const { createServer } = await import('node:net');
  const { tmpdir } = await import('node:os');
  const { processesWith } = await import('../helpers/vm-leftovers.js');
  const share = mkdtempSync(join(tmpdir(), 'banger-share-'));
  // a free loopback port, asked of the OS
  const probe = createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', () => r()));
  const port = (probe.address() as { port: number }).port;
  await new Promise((r) => probe.close(r));
  const bindable = () =>
    new Promise<boolean>((res) => {
      const s = createServer();
      s.once('error', () => res(false));
      s.listen(port, '127.0.0.1', () => s.close(() => res(true)));
    });
  try {
    const { vms, driver } = await services({ size: '16M', fromRegistry: true });
    await assert.rejects(vms.create({ image: 'img', name: 'pm', ports: [`${port}:80`], mounts: [`${share}:/mnt/share:ro`] }), (e) =>
      isBangerError(e, ErrorCode.Vmm),
    );
    const mounts = driver.launched!.mounts!;
    assert.equal(mounts.length, 1);
    // virtiofsd comes with qemu-system-x86 (qemu-system-common's /usr/lib/qemu/virtiofsd), which
    // scripts/install-deps.sh installs: the mount is virtiofs here, never a silent 9p fallback.
    assert.equal(mounts[0]!.kind, 'virtiofs', 'virtiofsd is installed with QEMU');
    assert.deepEqual(processesWith('virtiofs-banger0.sock'), [], 'virtiofsd stopped by the undo');
    assert.equal(await bindable(), true, 'the published port was released');
    assert.deepEqual(ctx.db.prepare('SELECT * FROM vms').all(), []);

    await assert.rejects(
      vms.create({ image: 'img', name: 'kept', ports: [`${port}:80`], keepOnFailure: true }),
      (e) => isBangerError(e, ErrorCode.Vmm) && /vm 'kept' was kept/.test(e.message) && e.details?.kept === true && /banger vm rm kept/.test(e.hint ?? ''),
    );
    assert.equal(vms.get('kept').createDone, true, 'kept VM is a finished record');
    assert.ok(existsSync(join(ctx.layout.vms, 'kept')));
    await vms.rm(['kept'], true);
    assert.equal(await bindable(), true, 'rm releases the kept VM port');
    assert.deepEqual(ctx.db.prepare('SELECT * FROM vms').all(), []);
  } finally {
    rmSync(share, { recursive: true, force: true });
    t.cleanup();
  }
});
