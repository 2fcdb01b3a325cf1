import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { BANGER, TestDaemon } from '../helpers/daemon.js';
import { type DebianVm, debianVmSkip, startDebianVm } from '../helpers/debian-vm.js';
import { nsRun } from '../helpers/netns.js';
import { bridgeInstance, dbRows, leftovers, natVmIds, processesWith, tapAliases, tapOf } from '../helpers/vm-leftovers.js';

/**
 * Real guests (QEMU microvm under TCG, Debian kernel from a local signed mirror, a debootstrap
 * Debian image from a local registry) around instances, crashes, cancels and concurrency.
 * Two instances A and B (two state roots) share ONE network namespace. Every "nothing left"
 * check is made the moment the CLI returns, without sleeping.
 */
const skip = debianVmSkip('iptables');

const T = { timeout: 900_000 };
const vm = { sshTimeoutSeconds: 300, stopTimeoutSeconds: 60, vcpu: 1, memoryMiB: 384 };
const cfgA = { vm };
const cfgB = { vm, network: { bridge: 'bangerb0', subnet: '172.17.0.0/24' } };
let fx: DebianVm | undefined;
let ns = '';
let A: TestDaemon;
let B: TestDaemon;
let instA = '';
let instB = '';
let baseRootfs = '';
let baseSha = '';
const daemons: TestDaemon[] = [];

function daemon(root: string, config: Record<string, unknown>, env: NodeJS.ProcessEnv = {}): TestDaemon {
  const d = new TestDaemon({ root, netns: ns, config, env });
  daemons.push(d);
  return d;
}

before(async () => {
  if (skip) return;
  // Kernel and image pulled into each root by a daemon of the fixture, then stopped: A and B
  // run on those roots without the mirror.
  fx = await startDebianVm({ ns: 'inst', config: cfgA, more: [cfgB] });
  ns = fx.ns;
  const [rootA, rootB] = [fx.d.root, fx.more[0]!.root];
  await fx.d.stop();
  await fx.more[0]!.stop();
  A = daemon(rootA, cfgA);
  B = daemon(rootB, cfgB);
  await A.start();
});

after(async () => {
  // Only daemons still running: one killed by a signal has exitCode null, and kill()/stop()
  // would wait for an 'exit' that already happened.
  for (const d of daemons) if (d.proc && d.proc.exitCode === null && d.proc.signalCode === null) await d.kill();
  for (const d of daemons) await d.stopAutostarted();
  await fx?.stop(); // kills the QEMU processes inside the namespace, deletes it, removes the roots
});

async function sha256(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(path)) h.update(c as Buffer);
  return h.digest('hex');
}

const ssh = (d: TestDaemon, name: string, cmd: string) => d.cli(['vm', 'ssh', name, '--', cmd], { timeoutMs: 120_000 });

/** `vm ssh NAME -- hostname` until it answers (an adopted guest may still be booting). */
async function sshEventually(d: TestDaemon, name: string, timeoutMs = 240_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    const r = await ssh(d, name, 'hostname');
    if (r.code === 0 && r.stdout.trim() === name) return;
    last = r.stderr;
    await new Promise((r) => setTimeout(r, 2000));
  }
  assert.fail(`vm ssh ${name} never answered: ${last}`);
}

/** The CLI as a child we can signal, with stderr collected (progress lines). */
function cliChild(d: TestDaemon, args: string[]) {
  const child = spawn(process.execPath, [BANGER, '--json', ...args], { env: d.env });
  const out = { stdout: '', stderr: '' };
  child.stdout.on('data', (b) => (out.stdout += b));
  child.stderr.on('data', (b) => (out.stderr += b));
  const done = new Promise<number>((r) => child.on('close', (code) => r(code ?? -1)));
  const until = async (re: RegExp, ms = 300_000) => {
    const deadline = Date.now() + ms;
    while (!re.test(out.stderr)) {
      if (Date.now() > deadline) throw new Error(`never saw ${re}: ${out.stderr}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  return { child, out, done, until };
}

async function until(cond: () => boolean, what: string, ms = 120_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** b1 is untouched: same QEMU, its tap and NAT rules present, SSH answers. */
async function bStillFine(pid: number): Promise<void> {
  assert.deepEqual(processesWith(`banger:${instB}:b1,`), [pid], "b1's QEMU is the same process");
  assert.ok(tapOf(ns, instB, 'b1'), "b1's tap is there");
  assert.equal(natVmIds(ns, instB).length, 1, "b1's NAT rules are there");
  const s = await ssh(B, 'b1', 'hostname');
  assert.equal(s.stdout.trim(), 'b1', s.stderr);
}

let b1Pid = 0;

test('a second instance in the same namespace: sharing the bridge or the subnet is refused; its own works', { skip, ...T }, async () => {
  const a1 = await A.json(['vm', 'create', '--image', 'debian-bookworm', '--name', 'a1', '--nat'], { timeoutMs: 600_000 });
  instA = bridgeInstance(ns, 'banger0');
  baseRootfs = JSON.parse(nsRun(ns, ['qemu-img', 'info', '--output=json', '-U', a1.spec.rootDisk.path]))['backing-filename'];
  baseSha = await sha256(baseRootfs);

  const refused = async (config: Record<string, unknown>, what: RegExp) => {
    const b = daemon(B.root, config);
    await b.start();
    const r = await b.cli(['--json', 'vm', 'create', '--image', 'debian-bookworm', '--name', 'bx', '--nat', '--no-wait']);
    const e = JSON.parse(r.stdout).error;
    assert.equal(e.code, 'E_IN_USE', r.stderr);
    assert.match(e.message, what);
    assert.match(e.message, new RegExp(`another banger instance \\(${instA}, state root ${A.root}\\)`));
    assert.match(e.hint, /'network\.bridge' and 'network\.subnet'/);
    assert.equal(bridgeInstance(ns, 'banger0'), instA, "A's bridge keeps A's mark");
    // Nothing of bx: no row, lease, directory, tap (by name in its mark) or QEMU.
    assert.deepEqual(dbRows(B.root), { vms: [], leases: [] });
    assert.deepEqual(readdirSync(`${B.root}/vms`), []);
    assert.ok(![...tapAliases(ns).values()].some((a) => a.endsWith(':bx')));
    assert.deepEqual(processesWith(':bx,'), []);
    await b.stop();
  };
  await refused({ vm }, /network\.bridge 'banger0'/);
  await refused({ vm, network: { bridge: 'bangerb0' } }, /network\.subnet '172\.16\.0\.0\/24' overlaps 172\.16\.0\.1\/24 on link 'banger0'/);

  B = daemon(B.root, cfgB); // (the refused daemons rewrote the root's config.json)
  await B.start();
  const b1 = await B.json(['vm', 'create', '--image', 'debian-bookworm', '--name', 'b1', '--nat'], { timeoutMs: 600_000 });
  instB = bridgeInstance(ns, 'bangerb0');
  assert.notEqual(instA, instB);
  assert.equal(b1.ip, '172.17.0.2');
  b1Pid = b1.pid;
  await bStillFine(b1Pid);
  assert.equal((await ssh(A, 'a1', 'hostname')).stdout.trim(), 'a1');
});

test("restarting, reconciling and using one instance never interrupts the other's VM; SIGTERM leaves VMs running and the next daemon adopts them", {
  skip,
  ...T,
}, async () => {
  // A crashes and restarts (reconcile), twice.
  for (let i = 0; i < 2; i++) {
    await A.kill();
    A = daemon(A.root, cfgA);
    await A.start();
    await bStillFine(b1Pid);
  }
  // A creates and removes a VM.
  const a2 = await A.json(['vm', 'create', '--image', 'debian-bookworm', '--name', 'a2', '--no-wait']);
  assert.equal(a2.running, true);
  assert.equal((await A.cli(['vm', 'rm', '--force', 'a2'])).code, 0);
  await bStillFine(b1Pid);
  // B stops with SIGTERM: b1 keeps running; B's successor adopts it. A's VM is untouched throughout.
  const a1 = await A.json(['vm', 'show', 'a1']);
  await B.stop();
  assert.deepEqual(processesWith(`banger:${instB}:b1,`), [b1Pid], 'SIGTERM of bangerd leaves its VMs running');
  B = daemon(B.root, cfgB);
  await B.start();
  const b1 = await B.json(['vm', 'show', 'b1']);
  assert.equal(b1.running, true);
  assert.equal(b1.pid, b1Pid, 'the next daemon adopts the same QEMU');
  await bStillFine(b1Pid);
  assert.deepEqual(processesWith(`banger:${instA}:a1,`), [a1.pid]);
  assert.ok(tapOf(ns, instA, 'a1'));
  assert.equal((await ssh(A, 'a1', 'hostname')).stdout.trim(), 'a1');
});

test('8 parallel vm create --no-wait: distinct IPs, taps and MACs, 8 rows, one qcow2 template; a duplicate name is E_EXISTS', { skip, ...T }, async () => {
  const names = Array.from({ length: 8 }, (_, i) => `p${i + 1}`);
  const runs = await Promise.all(
    [...names, 'p1'].map((n) => A.cli(['--json', 'vm', 'create', '--image', 'debian-bookworm', '--name', n, '--no-wait'], { timeoutMs: 300_000 })),
  );
  const ok = runs.filter((r) => r.code === 0).map((r) => JSON.parse(r.stdout));
  const failed = runs.filter((r) => r.code !== 0);
  assert.equal(ok.length, 8, runs.map((r) => r.stderr).join('\n'));
  assert.equal(failed.length, 1);
  assert.equal(JSON.parse(failed[0]!.stdout).error.code, 'E_EXISTS');
  assert.deepEqual(ok.map((v) => v.name).sort(), [...names].sort());
  for (const k of ['ip', 'tap', 'mac', 'id']) assert.equal(new Set(ok.map((v) => v[k])).size, 8, `distinct ${k}`);
  for (const v of ok) assert.equal(tapOf(ns, instA, v.name), v.tap, `${v.name}'s tap exists and carries A's mark`);
  const rows = dbRows(A.root);
  assert.deepEqual(
    rows.vms
      .map((v) => v.name)
      .filter((n) => n.startsWith('p'))
      .sort(),
    [...names].sort(),
  );
  assert.equal(new Set(rows.leases.map((l) => l.ip)).size, rows.leases.length);
  // Overlay templates live in the image's cache directory (layout.imageCacheDir), not beside the base.
  const imageDir = readdirSync(join(A.root, 'cache', 'images', 'debian-bookworm'));
  assert.deepEqual(
    readdirSync(dirname(baseRootfs)).filter((n) => n.includes('.overlay-')),
    [],
    'nothing written in the image directory',
  );
  assert.equal(imageDir.filter((n) => /^\.overlay-.*\.qcow2$/.test(n)).length, 1, `one template: ${imageDir.join(' ')}`);
  assert.deepEqual(
    imageDir.filter((n) => n.endsWith('.tmp')),
    [],
  );
  const rm = await A.cli(['vm', 'rm', '--force', ...names], { timeoutMs: 300_000 });
  assert.equal(rm.code, 0, rm.stderr);
  for (const n of names) assert.deepEqual(leftovers(ns, A.root, instA, n), [], n);
  await bStillFine(b1Pid);
});

test('bangerd SIGKILLed during vm create: before QEMU the VM is gone entirely; after QEMU it is adopted and usable', { skip, ...T }, async () => {
  for (const [step, name] of [
    ['network', 'k1'],
    ['vmm', 'k2'],
  ] as const) {
    await A.stop();
    A = daemon(A.root, cfgA, { BANGER_TEST_PAUSE_AT: step });
    await A.start();
    const c = cliChild(A, ['vm', 'create', '--image', 'debian-bookworm', '--name', name, '--nat']);
    await until(() => /"test pause"/.test(A.stderr) || /test pause/.test(A.stderr), `the daemon pausing at ${step}`);
    assert.ok(tapOf(ns, instA, name), `${name}'s tap exists when the daemon dies`);
    assert.equal(processesWith(`banger:${instA}:${name},`).length, step === 'vmm' ? 1 : 0);
    await A.kill();
    assert.notEqual(await c.done, 0, 'the CLI reports the lost daemon');
    A = daemon(A.root, cfgA);
    await A.start();
    if (step === 'network') {
      assert.deepEqual(leftovers(ns, A.root, instA, name), [], 'a create killed before QEMU leaves nothing after the restart');
      assert.ok(!(await A.json(['vm', 'list'])).some((v: { name: string }) => v.name === name));
    } else {
      const v = await A.json(['vm', 'show', name]);
      assert.equal(v.running, true, 'adopted');
      assert.equal(v.createDone, true);
      await sshEventually(A, name);
      assert.equal((await A.cli(['vm', 'rm', '--force', name])).code, 0);
      assert.deepEqual(leftovers(ns, A.root, instA, name), []);
    }
  }
  await bStillFine(b1Pid);
});

test('a failure after QEMU started unwinds before the error is reported: SSH timeout, the guest dies, Ctrl-C', { skip, ...T }, async () => {
  // (1) The guest never answers SSH within the (2 s) timeout.
  await A.stop();
  A = daemon(A.root, { vm: { ...vm, sshTimeoutSeconds: 2 } });
  await A.start();
  const t = await A.cli(['--json', 'vm', 'create', '--image', 'debian-bookworm', '--name', 'slow', '--nat'], { timeoutMs: 300_000 });
  assert.notEqual(t.code, 0);
  assert.equal(JSON.parse(t.stdout).error.code, 'E_TIMEOUT', t.stderr);
  assert.match(t.stderr, /\] vmm: pid \d+/, 'QEMU had started');
  assert.deepEqual(leftovers(ns, A.root, instA, 'slow'), []);

  await A.stop();
  A = daemon(A.root, cfgA);
  await A.start();
  // (2) The guest dies during the boot wait.
  const d = cliChild(A, ['vm', 'create', '--image', 'debian-bookworm', '--name', 'dies', '--nat']);
  await d.until(/\] vmm: pid \d+/);
  const [pid] = processesWith(`banger:${instA}:dies,`);
  assert.ok(pid, 'QEMU of dies is running');
  process.kill(pid!, 'SIGKILL');
  assert.notEqual(await d.done, 0);
  assert.equal(JSON.parse(d.out.stdout).error.code, 'E_VMM', d.out.stderr);
  assert.deepEqual(leftovers(ns, A.root, instA, 'dies'), []);

  // (3) Ctrl-C of the CLI during the boot wait.
  const c = cliChild(A, ['vm', 'create', '--image', 'debian-bookworm', '--name', 'ctrlc', '--nat']);
  await c.until(/\] (boot|ssh): /);
  c.child.kill('SIGINT');
  assert.notEqual(await c.done, 0);
  assert.equal(JSON.parse(c.out.stdout).error.code, 'E_CANCELLED', c.out.stderr);
  assert.deepEqual(leftovers(ns, A.root, instA, 'ctrlc'), []);
  await bStillFine(b1Pid);
});

test("the base image's sha256 is unchanged after guests wrote to their disks", { skip, ...T }, async () => {
  for (const [d, n] of [
    [A, 'a1'],
    [B, 'b1'],
  ] as const) {
    const w = await ssh(d, n, 'dd if=/dev/urandom of=/root/junk bs=1M count=32 status=none && rm -f /etc/motd && sync');
    assert.equal(w.code, 0, w.stderr);
  }
  assert.equal(await sha256(baseRootfs), baseSha);
});
