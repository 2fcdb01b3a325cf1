import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { enterArgv } from '../../src/core/cgroup-group.js';
import type { VmCgroupUsage } from '../../src/core/shapes/vm.js';
import { isRoot, missingTools, TestDaemon } from '../helpers/daemon.js';
import { debianMirrorUnavailable, startDebianMirror, type DebianMirror } from '../helpers/debian-mirror.js';
import { TestRegistry } from '../helpers/registry.js';
import { ensureDebianImageInRegistry } from '../helpers/debootstrap.js';
import { cleanupAll, createNetns, exposeInNetns } from '../helpers/netns.js';

/**
 * Resource limits (docs/limits.md) with real Debian guests on QEMU TCG, through bin/banger. Two
 * guests boot side by side and serve every case: `lim` (256 MiB RAM, --disk-iops 20, --cpu-quota
 * 1.5) and `free` (no disk limit: the unthrottled baseline of the same dd; --cpu-quota 0.5, a quota a
 * busy guest meets, for the CPU check: on `lim` it would slow the OOM case past its bounds). The daemon runs with
 * the host's cgroup hierarchies (`hostCgroups`: `ip netns exec` would hide /sys/fs/cgroup).
 * Proven here, in this order: the VMM and every thread of it are in the VM's group; the pids
 * limit holds (a task past pids.max in the VM's group is refused, the VMM lives on); the disk is
 * throttled (dd oflag=direct against the unthrottled guest); the group survives a daemon SIGKILL
 * and adoption; the memory limit holds (a guest allocating past its RAM is OOM-killed inside the
 * guest, the VMM never by the host; last, as the guest then takes minutes to recover); rm removes
 * the groups.
 */
const skip = !isRoot()
  ? 'needs root (namespaces, taps, nft, qemu, cgroups)'
  : (missingTools(
      'qemu-system-x86_64',
      'qemu-img',
      'ip',
      'nft',
      'nsenter',
      'ssh',
      'ssh-keygen',
      'mkfs.ext4',
      'debugfs',
      'skopeo',
      'debootstrap',
      'docker-registry',
    ) ?? debianMirrorUnavailable());

const T = { timeout: 900_000 };
const PIDS_MAX = 128;
let mirror: DebianMirror | undefined;
let registry: TestRegistry | undefined;
let d: TestDaemon | undefined;
let ns = '';

interface Shown {
  pid: number;
  running: boolean;
  spec: { memoryMiB: number; limits?: { memoryMaxMiB?: number; pidsMax?: number; cpuQuota?: number; diskIops?: number } };
  cgroup?: VmCgroupUsage;
}
const show = (name: string): Promise<Shown> => d!.json(['vm', 'show', name]);
const procsOf = (s: Shown) => s.cgroup!.dirs.map((x) => join(x, 'cgroup.procs'));
/** The guest answers `vm exec` again (waits on the answer, up to 6 min: a guest that just went through its OOM killer can take minutes under TCG on a loaded host). */
async function alive(name: string): Promise<void> {
  let last = '';
  for (const end = Date.now() + 360_000; Date.now() < end; ) {
    const r = await exec(name, 'echo alive');
    if (r.stdout.trim() === 'alive') return;
    last = r.stderr;
    await new Promise((res) => setTimeout(res, 1000));
  }
  assert.fail(`vm '${name}' does not answer: ${last}`);
}
const exec = (name: string, script: string) => d!.cli(['vm', 'exec', name, '--', 'sh', '-c', script], { timeoutMs: 300_000 });

before(
  async () => {
    if (skip) return;
    mirror = await startDebianMirror();
    registry = await TestRegistry.start();
    const ref = await ensureDebianImageInRegistry(registry.host);
    ns = createNetns('vmlimits');
    const exposed = [await exposeInNetns(ns, mirror.port), await exposeInNetns(ns, registry.port)];
    d = new TestDaemon({
      netns: ns,
      hostCgroups: true,
      env: { BANGER_DEBIAN_MIRROR: mirror.url },
      config: { vm: { sshTimeoutSeconds: 900, vcpu: 2, memoryMiB: 512 }, limits: { pidsMax: PIDS_MAX } },
    });
    await d.start();
    const k = await d.cli(['kernel', 'pull', 'debian-cloud-amd64'], { timeoutMs: 300_000 });
    assert.equal(k.code, 0, k.stderr);
    const i = await d.cli(['image', 'pull', ref, '--name', 'debian-bookworm', '--kernel-ref', 'debian-cloud-amd64'], { timeoutMs: 300_000 });
    assert.equal(i.code, 0, i.stderr);
    for (const stop of exposed) stop();
    const [a, b] = await Promise.all([
      d.cli(['vm', 'create', '--image', 'debian-bookworm', '--name', 'lim', '--memory', '256', '--disk-iops', '20', '--cpu-quota', '1.5'], {
        timeoutMs: 1_000_000,
      }),
      d.cli(['vm', 'create', '--image', 'debian-bookworm', '--name', 'free', '--cpu-quota', '0.5'], { timeoutMs: 1_000_000 }),
    ]);
    assert.equal(a.code, 0, `vm create lim: ${a.stderr}`);
    assert.equal(b.code, 0, `vm create free: ${b.stderr}`);
  },
  { timeout: 1_500_000 },
);

after(
  async () => {
    // Through banger, so the VMs' groups go too when a test failed before its own rm.
    if (d?.proc) await d.cli(['vm', 'rm', '--force', 'lim', 'free']).catch(() => undefined);
    await d?.cleanup();
    cleanupAll();
    await registry?.stop();
    await mirror?.close();
    if (d) rmSync(d.root, { recursive: true, force: true });
  },
  { timeout: 120_000 },
);

test('vm show: the limits, and the group the kernel has, with the VMM and all its threads inside', { skip, ...T }, async () => {
  const v = await show('lim');
  const overhead = v.spec.limits!.memoryMaxMiB! - 256;
  assert.ok(overhead > 0, `overhead ${overhead}`);
  assert.deepEqual(v.spec.limits, { memoryMaxMiB: 256 + overhead, pidsMax: PIDS_MAX, cpuQuota: 1.5, diskIops: 20 });
  const cg = v.cgroup!;
  assert.ok(cg, 'vm show reports the cgroup of a running VM');
  assert.equal(cg.memoryMaxBytes, (256 + overhead) * 1048576);
  assert.equal(cg.pidsMax, PIDS_MAX);
  assert.equal(cg.cpuQuota, 1.5);
  assert.ok(cg.memoryCurrentBytes > 0 && (cg.cpuUsageUsec ?? 1) > 0, JSON.stringify(cg));
  for (const p of procsOf(v)) assert.ok(readFileSync(p, 'utf8').split('\n').includes(String(v.pid)), `QEMU ${v.pid} in ${p}`);
  const threads = readdirSync(`/proc/${v.pid}/task`).length;
  assert.ok(cg.pidsCurrent >= threads, `pids.current ${cg.pidsCurrent} counts QEMU's ${threads} threads`);
  const rendered = await d!.cli(['vm', 'show', 'lim']);
  assert.match(rendered.stdout, new RegExp(`limits: +memory ${256 + overhead} MiB, pids ${PIDS_MAX}, cpu 1.5, disk 20 iops`));
  assert.match(rendered.stdout, /usage: +memory \d+ MiB of \d+ MiB, pids \d+ of 128, cpu [\d.]+ s \(cgroup v[12] /);
  // the unthrottled VM has memory and pids limits too (the defaults), its CPU quota, and no disk limit
  const f = await show('free');
  assert.deepEqual(f.spec.limits, { memoryMaxMiB: 512 + overhead, pidsMax: PIDS_MAX, cpuQuota: 0.5 });
  assert.equal(f.cgroup!.cpuQuota, 0.5);
});

test('pids: a task past pids.max in the VM group is refused; the VMM lives on', { skip, ...T }, async () => {
  const v = await show('lim');
  // A shell joins the VM's group (as a helper of the VMM would) and forks until the kernel refuses.
  const argv = enterArgv(procsOf(v), ['sh', '-c', `n=0; while [ $n -lt ${PIDS_MAX} ]; do sleep 30 >/dev/null 2>&1 & n=$((n+1)); done; echo "started=$n"`]);
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', timeout: 60_000 });
  try {
    assert.match(r.stderr, /fork|Resource temporarily unavailable/i, `no fork refused: ${r.stdout} ${r.stderr}`);
    const at = (await show('lim')).cgroup!;
    assert.ok(at.pidsCurrent <= PIDS_MAX, `pids.current ${at.pidsCurrent} > ${PIDS_MAX}`);
  } finally {
    // the forked sleeps (everything in the group but QEMU: `lim` has no virtiofsd)
    for (const p of readFileSync(procsOf(v)[0]!, 'utf8').split('\n').filter(Boolean)) {
      if (Number(p) === v.pid) continue;
      try {
        process.kill(Number(p), 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }
  assert.equal((await show('lim')).running, true);
  await alive('lim');
});

test('disk: --disk-iops throttles direct writes against the same dd on the unthrottled guest', { skip, ...T }, async () => {
  // 4 KiB direct writes, timed inside each guest (its own clock); iops = writes / seconds.
  const dd =
    'sync; s=$(date +%s%N); dd if=/dev/zero of=/root/dd.test bs=4k count=200 oflag=direct 2>/dev/null; e=$(date +%s%N); rm -f /root/dd.test; echo "ns=$((e-s))"';
  const iops = async (name: string) => {
    const r = await exec(name, dd);
    const ns = Number(/ns=(\d+)/.exec(r.stdout)?.[1]);
    assert.ok(ns > 0, `${name}: ${r.stdout} ${r.stderr}`);
    return 200 / (ns / 1e9);
  };
  const free = await iops('free');
  const lim = await iops('lim');
  console.log(`limits e2e: dd 4k oflag=direct: unthrottled ${free.toFixed(0)} iops, --disk-iops 20: ${lim.toFixed(0)} iops`);
  assert.ok(lim < free / 2, `throttled ${lim.toFixed(0)} iops is not well below unthrottled ${free.toFixed(0)}`);
  assert.ok(lim <= 20 * 1.5, `throttled ${lim.toFixed(0)} iops over the limit of 20`);
});

test('cpu: a busy guest (both vCPUs spinning) uses at most its --cpu-quota 0.5 (+10%) over 10 s, measured from its group', { skip, ...T }, async () => {
  // Two spinning loops for 14 s, started in the background; the window is the 10 s in the middle.
  const spin = exec('free', 'for i in 1 2; do timeout 14 sh -c "while :; do :; done" & done; wait; echo spun');
  await new Promise((r) => setTimeout(r, 2000));
  const a = await show('free');
  const t0 = process.hrtime.bigint();
  await new Promise((r) => setTimeout(r, 10_000));
  const b = await show('free');
  const elapsedUs = Number((process.hrtime.bigint() - t0) / 1000n);
  assert.ok(a.cgroup?.cpuUsageUsec !== undefined && b.cgroup?.cpuUsageUsec !== undefined, 'the group reports cpu usage');
  const cpus = (b.cgroup!.cpuUsageUsec! - a.cgroup!.cpuUsageUsec!) / elapsedUs;
  // The quota is below what two spinning vCPUs take (an unlimited busy guest used 0.93 CPUs on a
  // loaded 2-core host), so it binds: without it this fails.
  console.log(`limits e2e: busy guest with --cpu-quota 0.5 used ${cpus.toFixed(2)} host CPUs over ${(elapsedUs / 1e6).toFixed(1)} s`);
  assert.ok(cpus <= 0.5 * 1.1, `the VMM used ${cpus.toFixed(2)} CPUs, over its quota of 0.5 (+10%)`);
  assert.ok(cpus > 0.25, `the guest was not busy (${cpus.toFixed(2)} CPUs): the measurement proves nothing`);
  assert.match((await spin).stdout, /spun/);
});

test('the group survives a daemon SIGKILL and adoption', { skip, ...T }, async () => {
  const before = await show('lim');
  await d!.kill();
  await d!.start();
  const v = await show('lim');
  assert.equal(v.running, true);
  assert.equal(v.pid, before.pid);
  assert.deepEqual(v.cgroup!.dirs, before.cgroup!.dirs);
  for (const p of procsOf(v)) assert.ok(readFileSync(p, 'utf8').split('\n').includes(String(v.pid)));
});

test('memory: a guest process allocating past RAM is OOM-killed inside the guest; the VMM stays within memory.max; rm removes the groups', {
  skip,
  ...T,
}, async () => {
  const r = await exec('lim', 'head -c 600M /dev/zero | tail > /dev/null; echo "rc=$?"');
  assert.match(r.stdout, /rc=137/, `the guest's OOM killer did not kill the hog: ${r.stdout} ${r.stderr}`);
  const v = await show('lim');
  assert.equal(v.running, true, 'the VMM survived');
  const cg = v.cgroup!;
  // The measured overhead (the number docs/limits.md quotes): QEMU's peak RSS and the group's peak over guest RAM.
  const hwm = Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${v.pid}/status`, 'utf8'))![1]) * 1024;
  console.log(
    `limits e2e: guest RAM 256 MiB; QEMU peak RSS ${(hwm / 1048576).toFixed(0)} MiB (overhead ${(hwm / 1048576 - 256).toFixed(0)} MiB); group peak ${((cg.memoryPeakBytes ?? 0) / 1048576).toFixed(0)} MiB of ${(cg.memoryMaxBytes! / 1048576).toFixed(0)} MiB`,
  );
  assert.equal(cg.oomKills ?? 0, 0, 'the host never OOM-killed in the VMM group');
  if (cg.memoryPeakBytes !== undefined) assert.ok(cg.memoryPeakBytes <= cg.memoryMaxBytes!, `peak ${cg.memoryPeakBytes} > max ${cg.memoryMaxBytes}`);
  // Last in this file: the guest may need minutes to recover from its OOM killer under TCG (its
  // agent's pages were reclaimed); what is proven here is the VMM, alive in the same process.
  assert.ok(existsSync(`/proc/${v.pid}`), 'QEMU is alive');
  const dirs = [...cg.dirs, ...(await show('free')).cgroup!.dirs];
  const rm = await d!.cli(['vm', 'rm', '--force', 'lim', 'free']);
  assert.equal(rm.code, 0, rm.stderr);
  for (const x of dirs) assert.equal(existsSync(x), false, `${x} left after rm`);
});
