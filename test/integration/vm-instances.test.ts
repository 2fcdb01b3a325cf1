import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ErrorCode, isBangerError } from '../../src/core/errors.js';
import { exec } from '../../src/core/exec.js';
import { KernelService } from '../../src/kernels/service.js';
import { ImageService } from '../../src/images/service.js';
import { NetworkService } from '../../src/network/service.js';
import { Nat } from '../../src/network/nat.js';
import { VmService } from '../../src/vms/service.js';
import { QemuDriver } from '../../src/vms/drivers/qemu/index.js';
import type { LaunchSpec } from '../../src/vms/drivers/types.js';
import type { HostProbe } from '../../src/core/host.js';
import { cleanupAll, createNetns, nsLinks, nsRun } from '../helpers/netns.js';
import { isRoot, missingTools } from '../helpers/daemon.js';
import { netnsExec, tempContext } from '../helpers/vmctx.js';

/**
 * Two banger instances (two state roots) in ONE network namespace, without guests: a stand-in
 * "VMM" process per VM (its argv names the VM's QMP socket, as QEMU's does). Each instance
 * marks its bridge, taps and NAT rules with its own id; reconcile of one never touches the
 * other's; a third instance that would share a bridge or subnet is refused before it makes
 * anything, with an error naming the other instance and the config keys to change.
 */
const skip = !isRoot() ? 'needs root (namespaces, taps, nft)' : missingTools('ip', 'nft', 'qemu-img', 'mkfs.ext4', 'ssh-keygen');
const host: HostProbe = { which: async (c) => `/usr/bin/${c}`, readFile: async () => 'flags : fpu\n', canReadWrite: async () => false };

const pids: number[] = [];
/** A long-lived process whose argv carries `args` (as QEMU's would); killed in `after`. */
function standIn(args: string[]): number {
  const p = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 600000)', '--', ...args], { stdio: 'ignore', detached: true });
  p.unref();
  pids.push(p.pid!);
  return p.pid!;
}

/** Alive and not a zombie. */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^[ZX]/.test(stat.slice(stat.lastIndexOf(')') + 2));
  } catch {
    return false;
  }
}

class StandInQemu extends QemuDriver {
  override async launch(spec: LaunchSpec): Promise<{ pid: number }> {
    const p = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 600000)', spec.files.qmp], { stdio: 'ignore', detached: true });
    p.unref();
    writeFileSync(spec.files.pid, `${p.pid}\n`);
    pids.push(p.pid!);
    return { pid: p.pid! };
  }
}

let ns = '';
before(() => {
  if (!skip) ns = createNetns('vminst');
});
after(() => {
  for (const p of pids) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  cleanupAll();
});

/** One instance: its own temp root and database (hence its own instance id), image 'img', kernel 'k1'. */
async function instance(network: { bridge: string; subnet: string }) {
  const t = tempContext({ exec: netnsExec(ns), config: { network } });
  const { ctx } = t;
  const kdir = join(ctx.layout.kernels, 'k1');
  mkdirSync(kdir, { recursive: true });
  writeFileSync(join(kdir, 'vmlinuz'), 'x');
  const now = new Date().toISOString();
  ctx.db.prepare("INSERT INTO kernels (name, source, vmlinux_sha256, path, created_at) VALUES ('k1', 'import:test', 'x', ?, ?)").run(kdir, now);
  mkdirSync(ctx.layout.images, { recursive: true });
  const rootfs = join(ctx.layout.images, 'rootfs.ext4');
  await exec(['mkfs.ext4', '-q', '-F', rootfs, '16M']);
  ctx.db
    .prepare("INSERT INTO images (name, source_ref, rootfs_path, kernel_ref, from_registry, created_at) VALUES ('img', 'test', ?, 'k1', 1, ?)")
    .run(rootfs, now);
  const kernels = new KernelService(ctx);
  const images = new ImageService(ctx, { kernels });
  const driver = new StandInQemu(exec, { qemu: 'qemu-system-x86_64' });
  /** A fresh service set over the same database: what a restarted daemon has. */
  const make = () => {
    const network = new NetworkService(ctx, {
      natBackend: 'nft',
      enableForwarding: async () => void nsRun(ns, ['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']),
    });
    return new VmService(ctx, { kernels, images, network }, { drivers: { qemu: driver }, host });
  };
  return { t, ctx, make, instance: make().deps.network.instance };
}

const taps = () =>
  nsLinks(ns)
    .map((l) => l.ifname)
    .filter((n) => n.startsWith('tap-'))
    .sort();
const alias = (dev: string) => (JSON.parse(nsRun(ns, ['ip', '-d', '-j', 'link', 'show', 'dev', dev])) as { ifalias?: string }[])[0]!.ifalias;

test('two instances in one namespace: each marks what it makes, and reconcile removes only its own', { skip, timeout: 120_000 }, async () => {
  const a = await instance({ bridge: 'bgia0', subnet: '10.86.0.0/24' });
  const b = await instance({ bridge: 'bgib0', subnet: '10.87.0.0/24' });
  try {
    assert.notEqual(a.instance, b.instance, 'each state database has its own instance id');
    const a1 = await a.make().create({ image: 'img', name: 'a1', nat: true, wait: false });
    const a2 = await a.make().create({ image: 'img', name: 'a2', nat: true, wait: false });
    const b1 = await b.make().create({ image: 'img', name: 'b1', nat: true, wait: false });
    const b2 = await b.make().create({ image: 'img', name: 'b2', nat: true, wait: false });

    // The marks: bridge and taps by ifalias, NAT rules by comment.
    assert.equal(alias('bgia0'), `banger:${a.instance} root=${a.ctx.config.root}`);
    assert.equal(alias(a1.tap!), `banger:${a.instance}:a1`);
    assert.equal(alias(b1.tap!), `banger:${b.instance}:b1`);
    const ruleset = nsRun(ns, ['nft', 'list', 'ruleset']);
    assert.match(ruleset, new RegExp(`ip saddr ${a1.ip!.replace(/\./g, '\\.')} .*masquerade comment "banger:${a.instance}:vm:${a1.id}"`));
    assert.match(ruleset, new RegExp(`ip saddr ${b1.ip!.replace(/\./g, '\\.')} .*masquerade comment "banger:${b.instance}:vm:${b1.id}"`));

    // b2's VMM dies while b's daemon is down; an unmarked tap on no bridge belongs to nobody we know.
    process.kill(b2.pid!, 'SIGKILL');
    nsRun(ns, ['ip', 'tuntap', 'add', 'dev', 'tap-abcdefabcd', 'mode', 'tap']);
    const before = taps();

    // Instance a restarts (twice: reconcile is idempotent): b's taps and rules are untouched.
    await a.make().reconcile();
    await a.make().reconcile();
    assert.deepEqual(taps(), before, "a's reconcile removed nothing (all of a's VMs run; the rest is not a's)");
    assert.deepEqual((await b.make().deps.network.nat.vmIdsWithRules()).sort(), [b1.id, b2.id].sort(), "b's NAT rules are all still there");

    // Instance b restarts: b2 (dead) loses its tap and rules; a's VMs and the stranger's tap stay.
    await b.make().reconcile();
    assert.deepEqual(
      taps(),
      before.filter((n) => n !== b2.tap),
      "b's reconcile removed only b2's tap",
    );
    assert.deepEqual((await a.make().deps.network.nat.vmIdsWithRules()).sort(), [a1.id, a2.id].sort());
    assert.deepEqual(await b.make().deps.network.nat.vmIdsWithRules(), [b1.id]);

    // An orphan of a's own (marked with a's id; a NAT rule of a VM id a has no row for) is removed by a's reconcile only.
    nsRun(ns, ['ip', 'tuntap', 'add', 'dev', 'tap-0a0a0a0a0a', 'mode', 'tap']);
    nsRun(ns, ['ip', 'link', 'set', 'dev', 'tap-0a0a0a0a0a', 'alias', `banger:${a.instance}:gone`]);
    await new Nat(netnsExec(ns), a.instance, { forceBackend: 'nft' }).add('ffffffffffffffffffff', '10.86.0.99', 'bgia0');
    await b.make().reconcile();
    assert.ok(taps().includes('tap-0a0a0a0a0a'), "b leaves a's orphan alone");
    await a.make().reconcile();
    assert.ok(!taps().includes('tap-0a0a0a0a0a'), 'a removes its own orphan tap');
    assert.deepEqual((await a.make().deps.network.nat.vmIdsWithRules()).sort(), [a1.id, a2.id].sort(), 'a removes its own orphan rule');
    assert.ok(taps().includes('tap-abcdefabcd'), "an unmarked tap off both bridges is nobody's: kept");
    nsRun(ns, ['ip', 'link', 'del', 'tap-abcdefabcd']);

    // VMM processes: one marked with a's id but no VM of a's accounts for it (killed by a's
    // reconcile), one marked with b's id (b's business), one unmarked (nobody's).
    const marked = (inst: string, vm: string) => standIn(['-name', `banger:${inst}:${vm},process=banger-${vm}`]);
    const [aGhost, bGhost, stranger] = [marked(a.instance, 'ghost'), marked(b.instance, 'ghost'), standIn(['-name', 'ghost'])];
    for (const p of [aGhost, bGhost, stranger]) assert.equal(alive(p), true, 'stand-ins are up');
    await a.make().reconcile();
    assert.equal(alive(aGhost), false, "a kills a VMM marked with its id that no VM of a's owns");
    assert.equal(alive(bGhost), true, "a leaves b's VMM alone");
    assert.equal(alive(stranger), true, 'a leaves an unmarked process alone');
    assert.equal(alive(a1.pid!), true, "a's adopted VMM keeps running");
    assert.equal(alive(b1.pid!), true);

    await a.make().rm(['a1', 'a2'], true);
    await b.make().rm(['b1', 'b2'], true);
    assert.deepEqual(taps(), []);
    assert.doesNotMatch(nsRun(ns, ['nft', 'list', 'ruleset']), /banger:[0-9a-f]{12}:vm:/);
  } finally {
    a.t.cleanup();
    b.t.cleanup();
  }
});

test('a third instance that would share a bridge or a subnet is refused, naming the other instance and the keys', { skip, timeout: 120_000 }, async () => {
  const a = await instance({ bridge: 'bgic0', subnet: '10.88.0.0/24' });
  const c = await instance({ bridge: 'bgic0', subnet: '10.89.0.0/24' });
  const d = await instance({ bridge: 'bgid0', subnet: '10.88.0.128/25' });
  try {
    const a1 = await a.make().create({ image: 'img', name: 'a1', nat: true, wait: false });
    const linksBefore = taps();
    const refused = (vms: VmService, name: string, what: RegExp) =>
      assert.rejects(vms.create({ image: 'img', name, nat: true, wait: false }), (e) => {
        assert.ok(isBangerError(e, ErrorCode.InUse), String(e));
        assert.match(e.message, what);
        assert.match(e.message, new RegExp(`another banger instance \\(${a.instance}, state root ${a.ctx.config.root}\\)`));
        assert.match(e.hint ?? '', /'network\.bridge' and 'network\.subnet'/);
        return true;
      });
    await refused(c.make(), 'c1', /network\.bridge 'bgic0'/);
    await refused(d.make(), 'd1', /network\.subnet '10\.88\.0\.128\/25' overlaps 10\.88\.0\.1\/24 on link 'bgic0'/);
    // Refused before anything was left: no tap, rule, row, lease or directory of c or d.
    assert.deepEqual(taps(), linksBefore);
    assert.equal(alias('bgic0'), `banger:${a.instance} root=${a.ctx.config.root}`, "a's bridge keeps a's mark");
    assert.equal(
      nsLinks(ns).some((l) => l.ifname === 'bgid0'),
      false,
      'd made no bridge',
    );
    for (const x of [c, d]) {
      assert.deepEqual(x.ctx.db.prepare('SELECT * FROM vms').all(), []);
      assert.deepEqual(x.ctx.db.prepare('SELECT * FROM ip_leases').all(), []);
      assert.deepEqual(existsSync(x.ctx.layout.vms) ? readdirSync(x.ctx.layout.vms) : [], []);
      assert.deepEqual(await x.make().deps.network.nat.vmIdsWithRules(), []);
    }
    assert.deepEqual(await a.make().deps.network.nat.vmIdsWithRules(), [a1.id]);
    await a.make().rm(['a1'], true);
  } finally {
    for (const x of [a, c, d]) x.t.cleanup();
  }
});
