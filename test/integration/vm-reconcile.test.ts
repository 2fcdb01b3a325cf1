import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BangerError, ErrorCode, isBangerError } from '../../src/core/errors.js';
import { exec } from '../../src/core/exec.js';
import { KernelService } from '../../src/kernels/service.js';
import { ImageService } from '../../src/images/service.js';
import { NetworkService } from '../../src/network/service.js';
import { VmService } from '../../src/vms/service.js';
import { QemuDriver } from '../../src/vms/drivers/qemu/index.js';
import type { LaunchSpec } from '../../src/vms/drivers/types.js';
import { realHost, type HostProbe } from '../../src/core/host.js';
import { detectCgroups, type CgroupHost } from '../../src/core/cgroup.js';
import { createGroup, enterArgv, groupDirs, groupName, removeGroup } from '../../src/core/cgroup-group.js';
import { cleanupAll, createNetns, nsLinks, nsRun } from '../helpers/netns.js';
import { isRoot, missingTools } from '../helpers/daemon.js';
import { netnsExec, tempContext } from '../helpers/vmctx.js';

/**
 * Reconcile at daemon start and cancellation, without a guest: a stand-in "VMM" process whose
 * command line names the VM's QMP socket is adopted; a dead one is marked stopped and its tap
 * and NAT rules removed; orphan taps, rules and directories go. A create cancelled during the
 * VMM step unwinds everything.
 */
const skip = !isRoot() ? 'needs root (namespaces, taps, nft)' : missingTools('ip', 'nft', 'qemu-img', 'mkfs.ext4', 'ssh-keygen');
const host: HostProbe = { which: async (c) => `/usr/bin/${c}`, readFile: async () => 'flags : fpu\n', canReadWrite: async () => false };

/** Starts a long-lived stand-in process carrying `marker` in its argv; returns its pid. */
function standIn(marker: string, cgroup: string[] = []): number {
  const [bin, ...args] = enterArgv(cgroup, [process.execPath, '-e', 'setTimeout(() => {}, 600000)', marker]);
  const p = spawn(bin!, args, { stdio: 'ignore', detached: true });
  p.unref();
  return p.pid!;
}

class StandInQemu extends QemuDriver {
  pids: number[] = [];
  cancelOnStart = false;
  /** Written to the VM's console as the VMM starts (what a guest would print). */
  consoleOnStart?: string;
  override async launch(spec: LaunchSpec, o: { signal?: AbortSignal } = {}): Promise<{ pid: number }> {
    if (this.consoleOnStart) writeFileSync(spec.files.console, this.consoleOnStart);
    if (this.cancelOnStart) {
      if (!o.signal?.aborted) await new Promise((r) => o.signal?.addEventListener('abort', r, { once: true }));
      throw new BangerError(ErrorCode.Cancelled, 'qemu cancelled');
    }
    const pid = standIn(spec.files.qmp, spec.cgroup?.procs);
    writeFileSync(spec.files.pid, `${pid}\n`);
    this.pids.push(pid);
    return { pid };
  }
}

let ns = '';
const pids: number[] = [];
before(
  () => {
    if (!skip) ns = createNetns('vmrec');
  },
  { timeout: 600_000 },
);
after(
  () => {
    for (const p of pids) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    cleanupAll();
  },
  { timeout: 120_000 },
);

function services(net = { bridge: 'bgrec0', subnet: '10.82.0.0/24' }, cgroups?: CgroupHost) {
  const t = tempContext({ exec: netnsExec(ns), config: { network: net } });
  const { ctx } = t;
  const kdir = join(ctx.layout.kernels, 'k1');
  mkdirSync(kdir, { recursive: true });
  writeFileSync(join(kdir, 'vmlinuz'), 'x');
  const now = new Date().toISOString();
  ctx.db.prepare("INSERT INTO kernels (name, source, vmlinux_sha256, path, created_at) VALUES ('k1', 'import:test', 'x', ?, ?)").run(kdir, now);
  mkdirSync(ctx.layout.images, { recursive: true });
  const rootfs = join(ctx.layout.images, 'rootfs.ext4');
  ctx.db
    .prepare("INSERT INTO images (name, source_ref, rootfs_path, kernel_ref, from_registry, created_at) VALUES ('img', 'test', ?, 'k1', 1, ?)")
    .run(rootfs, now);
  const kernels = new KernelService(ctx);
  const images = new ImageService(ctx, { kernels });
  const network = new NetworkService(ctx, { enableForwarding: async () => void nsRun(ns, ['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']) });
  const driver = new StandInQemu(exec, { qemu: 'qemu-system-x86_64' });
  const make = () => new VmService(ctx, { kernels, images, network }, { drivers: { qemu: driver }, host, cgroups });
  return { t, ctx, rootfs, driver, make };
}

test('reconcile adopts a live VMM, stops a dead one, removes orphan taps, rules and directories', { skip, timeout: 120_000 }, async () => {
  const { t, ctx, rootfs, driver, make } = services();
  try {
    await exec(['mkfs.ext4', '-q', '-F', rootfs, '16M']);
    const vms = make();
    const a = await vms.create({ image: 'img', name: 'alive', nat: true, wait: false });
    const b = await vms.create({ image: 'img', name: 'dead', nat: true, wait: false });
    pids.push(...driver.pids);
    assert.equal(a.running, true);
    assert.equal(b.running, true);
    // The daemon "dies"; meanwhile b's VMM dies too, and leftovers appear.
    process.kill(b.pid!, 'SIGKILL');
    await new Promise((r) => setTimeout(r, 200));
    nsRun(ns, ['ip', 'tuntap', 'add', 'dev', 'tap-00000000aa', 'mode', 'tap']);
    nsRun(ns, ['ip', 'link', 'set', 'dev', 'tap-00000000aa', 'alias', `banger:${make().deps.network.instance}:gone`]); // ours (marked)
    await make().deps.network.nat.add('ffffffffffffffffffff', '10.82.0.99', 'bgrec0');
    mkdirSync(join(ctx.layout.vms, 'half-made'), { recursive: true });

    await make().reconcile();
    const alive = ctx.db.prepare("SELECT state, pid FROM vms WHERE name = 'alive'").get() as { state: string; pid: number };
    assert.deepEqual(alive, { state: 'running', pid: a.pid });
    const dead = ctx.db.prepare("SELECT state, pid FROM vms WHERE name = 'dead'").get() as { state: string; pid: number | null };
    assert.deepEqual(dead, { state: 'stopped', pid: null });
    const taps = nsLinks(ns)
      .map((l) => l.ifname)
      .filter((n) => n.startsWith('tap-'));
    assert.deepEqual(taps, [a.tap], "only the live VM's tap is left");
    const ids = await make().deps.network.nat.vmIdsWithRules();
    assert.deepEqual(ids, [a.id], "only the live VM's NAT rules are left");
    assert.equal(existsSync(join(ctx.layout.vms, 'half-made')), false);
    assert.equal(existsSync(join(ctx.layout.vms, 'dead')), true, 'a stopped VM keeps its disks');
    // Reconcile is idempotent.
    await make().reconcile();
    assert.deepEqual(
      nsLinks(ns)
        .map((l) => l.ifname)
        .filter((n) => n.startsWith('tap-')),
      [a.tap],
    );

    await make().rm(['alive', 'dead'], true);
    assert.deepEqual(
      nsLinks(ns).filter((l) => l.ifname.startsWith('tap-')),
      [],
    );
    assert.deepEqual(await make().deps.network.nat.vmIdsWithRules(), []);
    assert.deepEqual(ctx.db.prepare('SELECT * FROM ip_leases').all(), []);
  } finally {
    t.cleanup();
  }
});

test("limits: reconcile keeps the group of an adopted VM, removes a dead one's and orphan groups of this instance (not another instance's); rm removes it", {
  skip,
  timeout: 120_000,
}, async () => {
  const cg = await detectCgroups(realHost.readFile);
  assert.notEqual(cg.version, 0, 'this host offers a cgroup hierarchy (v1 or v2)');
  if (cg.version === 0) return;
  const { t, rootfs, driver, make } = services({ bridge: 'bgrec9', subnet: '10.97.0.0/24' }, cg);
  const other = groupName('0'.repeat(12), 'e'.repeat(20));
  try {
    await exec(['mkfs.ext4', '-q', '-F', rootfs, '16M']);
    const vms = make();
    const inst = vms.deps.network.instance;
    const a = await vms.create({ image: 'img', name: 'ga', wait: false });
    const b = await vms.create({ image: 'img', name: 'gb', wait: false });
    pids.push(...driver.pids);
    const dirs = (id: string) => groupDirs(cg, groupName(inst, id));
    const inside = (id: string, pid: number) => dirs(id).every((d) => readFileSync(join(d, 'cgroup.procs'), 'utf8').split('\n').includes(String(pid)));
    // The stand-in is spawned, not awaited (QEMU's -daemonize is): wait until its wrapper entered.
    for (const end = Date.now() + 10_000; !(inside(a.id, a.pid!) && inside(b.id, b.pid!)) && Date.now() < end; ) await new Promise((r) => setTimeout(r, 50));
    assert.ok(inside(a.id, a.pid!) && inside(b.id, b.pid!), 'each VMM runs in its own group');
    process.kill(b.pid!, 'SIGKILL');
    const orphan = groupName(inst, 'f'.repeat(20));
    await createGroup(cg, orphan, { memoryBytes: 1 << 26, pids: 16 });
    await createGroup(cg, other, { memoryBytes: 1 << 26, pids: 16 });

    await make().reconcile();
    assert.ok(inside(a.id, a.pid!), 'the adopted VM keeps its group, VMM inside');
    for (const d of [...dirs(b.id), ...groupDirs(cg, orphan)]) assert.equal(existsSync(d), false, `${d} left`);
    for (const d of groupDirs(cg, other)) assert.ok(existsSync(d), "another instance's group is not touched");

    await make().rm(['ga', 'gb'], true);
    for (const d of dirs(a.id)) assert.equal(existsSync(d), false, `${d} left after rm`);
  } finally {
    await removeGroup(cg, other);
    t.cleanup();
  }
});

test('Ctrl-C during the VMM step unwinds the create (E_CANCELLED, nothing left)', { skip, timeout: 60_000 }, async () => {
  const { t, ctx, rootfs, driver, make } = services({ bridge: 'bgrec1', subnet: '10.85.0.0/24' }); // another instance: its own bridge and subnet
  try {
    await exec(['mkfs.ext4', '-q', '-F', rootfs, '16M']);
    driver.cancelOnStart = true;
    const ac = new AbortController();
    const p = make().create(
      { image: 'img', name: 'cancelled', nat: true },
      { signal: ac.signal, progress: (e) => e.stage === 'network' && e.done && setImmediate(() => ac.abort()) },
    );
    await assert.rejects(p, (e) => isBangerError(e, ErrorCode.Cancelled));
    assert.deepEqual(ctx.db.prepare('SELECT * FROM vms').all(), []);
    assert.deepEqual(ctx.db.prepare('SELECT * FROM ip_leases').all(), []);
    assert.deepEqual(
      nsLinks(ns).filter((l) => l.ifname.startsWith('tap-')),
      [],
    );
    assert.equal(existsSync(join(ctx.layout.vms, 'cancelled')), false);
  } finally {
    t.cleanup();
  }
});

test('a first-boot error on the console after the VMM started unwinds the create: VMM killed, tap, rules, lease, files gone', {
  skip,
  timeout: 60_000,
}, async () => {
  const { t, ctx, rootfs, driver, make } = services({ bridge: 'bgrec2', subnet: '10.90.0.0/24' });
  try {
    await exec(['mkfs.ext4', '-q', '-F', rootfs, '16M']);
    // The console shows the error before the first readiness round, so no probe ever reaches the guest address.
    driver.consoleOnStart = 'banger-first-boot: step install\nbanger-first-boot: error: no package manager found (apt-get, apk, dnf, pacman, zypper)\n';
    const vms = make();
    await assert.rejects(
      vms.create({ image: 'img', name: 'fb', nat: true }),
      (e) => isBangerError(e, ErrorCode.Vmm) && /step first-boot: .*banger-first-boot: error: no package manager found/.test(e.message),
    );
    // Checked the moment the error is back, no sleep.
    const pid = driver.pids.at(-1)!;
    pids.push(pid);
    assert.equal(running(pid), false, 'the VMM process was killed by the undo');
    assert.deepEqual(
      nsLinks(ns).filter((l) => l.ifname.startsWith('tap-')),
      [],
    );
    assert.deepEqual(await vms.deps.network.nat.vmIdsWithRules(), []);
    assert.doesNotMatch(nsRun(ns, ['iptables', '-w', '-S']), /banger:/);
    assert.deepEqual(ctx.db.prepare('SELECT * FROM vms').all(), []);
    assert.deepEqual(ctx.db.prepare('SELECT * FROM ip_leases').all(), []);
    assert.equal(existsSync(join(ctx.layout.vms, 'fb')), false);
  } finally {
    t.cleanup();
  }
});

/** Alive and not a zombie. */
function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^[ZX]/.test(stat.slice(stat.lastIndexOf(')') + 2));
  } catch {
    return false;
  }
}

test('rows of a create that never finished (daemon died mid-create): VMM alive → adopted; no VMM → removed entirely', { skip, timeout: 60_000 }, async () => {
  const { t, ctx, rootfs, driver, make } = services({ bridge: 'bgrec3', subnet: '10.91.0.0/24' });
  try {
    await exec(['mkfs.ext4', '-q', '-F', rootfs, '16M']);
    const up = await make().create({ image: 'img', name: 'half-up', nat: true, wait: false });
    const down = await make().create({ image: 'img', name: 'half-down', nat: true, wait: false });
    pids.push(...driver.pids);
    // What a daemon SIGKILLed mid-create leaves: rows still marked unfinished; one VMM never started.
    ctx.db.prepare("UPDATE vms SET create_done = 0 WHERE name IN ('half-up', 'half-down')").run();
    process.kill(down.pid!, 'SIGKILL');
    await new Promise((r) => setTimeout(r, 200));

    await make().reconcile();
    const rows = ctx.db.prepare('SELECT name, state, create_done FROM vms').all();
    assert.deepEqual(rows, [{ name: 'half-up', state: 'running', create_done: 1 }], 'adopted and finished; the other row is gone');
    assert.deepEqual(ctx.db.prepare('SELECT vm_name FROM ip_leases').all(), [{ vm_name: 'half-up' }]);
    assert.deepEqual(
      nsLinks(ns)
        .map((l) => l.ifname)
        .filter((n) => n.startsWith('tap-')),
      [up.tap],
    );
    assert.deepEqual(await make().deps.network.nat.vmIdsWithRules(), [up.id]);
    assert.equal(existsSync(join(ctx.layout.vms, 'half-down')), false, 'its directory is gone');
    assert.doesNotMatch(readFileSync(join(ctx.layout.ssh, 'known_hosts'), 'utf8'), /half-down/, 'its host key is unpinned');
    await make().rm(['half-up'], true);
  } finally {
    t.cleanup();
  }
});

test('a builder VM of a prepare the daemon did not see through (spec.prepare) is removed at start, running or not', { skip, timeout: 60_000 }, async () => {
  const { t, ctx, rootfs, driver, make } = services({ bridge: 'bgrec4', subnet: '10.92.0.0/24' });
  try {
    await exec(['mkfs.ext4', '-q', '-F', rootfs, '16M']);
    const builder = await make().create({ image: 'img', name: 'prepare-0a1b2c3d', nat: true, wait: false });
    const user = await make().create({ image: 'img', name: 'keeper', nat: true, wait: false });
    pids.push(...driver.pids);
    // What a daemon killed during a prepare leaves: the builder's row (its spec says prepare) and its VMM running.
    const row = ctx.db.prepare("SELECT spec_json FROM vms WHERE name = 'prepare-0a1b2c3d'").get() as { spec_json: string };
    ctx.db.prepare("UPDATE vms SET spec_json = ? WHERE name = 'prepare-0a1b2c3d'").run(JSON.stringify({ ...JSON.parse(row.spec_json), prepare: true }));

    await make().reconcile();
    assert.deepEqual(ctx.db.prepare('SELECT name FROM vms').all(), [{ name: 'keeper' }], 'the builder row is gone, the user VM adopted');
    assert.deepEqual(ctx.db.prepare('SELECT vm_name FROM ip_leases').all(), [{ vm_name: 'keeper' }]);
    assert.deepEqual(
      nsLinks(ns)
        .map((l) => l.ifname)
        .filter((n) => n.startsWith('tap-')),
      [user.tap],
      'its tap is gone',
    );
    assert.deepEqual(await make().deps.network.nat.vmIdsWithRules(), [user.id], 'its NAT rules are gone');
    assert.equal(existsSync(join(ctx.layout.vms, 'prepare-0a1b2c3d')), false);
    let alive = true;
    try {
      process.kill(builder.pid!, 0);
    } catch {
      alive = false;
    }
    assert.equal(alive, false, 'its VMM is killed');
    await make().rm(['keeper'], true);
  } finally {
    t.cleanup();
  }
});
