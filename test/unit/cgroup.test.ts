import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cgroup1Mounts, detectCgroups } from '../../src/core/cgroup.js';
import {
  createGroup,
  enterArgv,
  groupDirs,
  groupName,
  groupUsage,
  limitFiles,
  listGroups,
  procsFiles,
  realCgroupFs,
  removeGroup,
  type CgroupFs,
} from '../../src/core/cgroup-group.js';
import { ConfigSchema } from '../../src/core/config.js';
import type { BangerError } from '../../src/core/errors.js';
import { jailerCgroupArgs } from '../../src/vms/drivers/firecracker/jailer.js';
import { cgroupLimits, limitsFor, orphanGroups } from '../../src/vms/limits.js';

/**
 * The cgroup v2 file logic against a fake hierarchy in a temp directory (this host's v2 has no
 * controllers, so the real v2 kernel interface is NOT exercised here: the v1 code path is, in
 * test/integration/cgroup-v1.test.ts, against the real kernel). A temp directory has no
 * interface files and rmdir refuses a non-empty directory, so `rmdir` of the fake removes the
 * tree (what the kernel does for a cgroup with no tasks).
 */
function fakeV2(): { mount: string; fs: CgroupFs; done: () => void } {
  const mount = mkdtempSync(join(tmpdir(), 'banger-cg2-'));
  writeFileSync(join(mount, 'cgroup.controllers'), 'cpuset cpu io memory hugetlb pids rdma\n');
  return { mount, fs: { ...realCgroupFs, rmdir: (p) => rm(p, { recursive: true, force: true }) }, done: () => rmSync(mount, { recursive: true, force: true }) };
}

const LIMITS = { memoryBytes: 1280 * 1048576, pids: 512, cpuQuota: 0.5 };

test('cgroup v2: the group is banger/<instance>-<vm id> with memory.max, pids.max, cpu.max; controllers enabled for root and banger/', async () => {
  const f = fakeV2();
  try {
    const host = { version: 2 as const, mount: f.mount };
    const name = groupName('0123456789ab', 'c0ffee');
    assert.equal(name, '0123456789ab-c0ffee');
    await createGroup(host, name, LIMITS, f.fs);
    const dir = join(f.mount, 'banger', name);
    assert.deepEqual(groupDirs(host, name), [dir]);
    assert.deepEqual(procsFiles(host, name), [join(dir, 'cgroup.procs')]);
    assert.equal(readFileSync(join(f.mount, 'cgroup.subtree_control'), 'utf8'), '+memory +pids +cpu');
    assert.equal(readFileSync(join(f.mount, 'banger', 'cgroup.subtree_control'), 'utf8'), '+memory +pids +cpu');
    assert.equal(readFileSync(join(dir, 'memory.max'), 'utf8'), String(1280 * 1048576));
    assert.equal(readFileSync(join(dir, 'pids.max'), 'utf8'), '512');
    assert.equal(readFileSync(join(dir, 'cpu.max'), 'utf8'), '50000 100000');
    // what the kernel would show: usage files, read back by vm show
    writeFileSync(join(dir, 'cgroup.procs'), '4242\n');
    writeFileSync(join(dir, 'memory.current'), '734003200\n');
    writeFileSync(join(dir, 'memory.events'), 'low 0\nhigh 0\nmax 3\noom 0\noom_kill 0\n');
    writeFileSync(join(dir, 'pids.current'), '9\n');
    writeFileSync(join(dir, 'cpu.stat'), 'usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n');
    const u = await groupUsage(host, name, f.fs);
    assert.deepEqual(u, {
      version: 2,
      dirs: [dir],
      memoryMaxBytes: 1280 * 1048576,
      memoryCurrentBytes: 734003200,
      memoryPeakBytes: undefined,
      oomKills: 0,
      pidsMax: 512,
      pidsCurrent: 9,
      cpuQuota: 0.5,
      cpuUsageUsec: 2500000,
    });
    // no quota: cpu.max "max 100000" reads back as null
    await createGroup(host, 'other-1', { memoryBytes: 1 << 30, pids: 64 }, f.fs);
    assert.equal(readFileSync(join(f.mount, 'banger', 'other-1', 'cpu.max'), 'utf8'), 'max 100000');
    writeFileSync(join(f.mount, 'banger', 'other-1', 'cgroup.procs'), '');
    assert.equal((await groupUsage(host, 'other-1', f.fs))!.cpuQuota, null);
    // an instance lists only its own groups
    assert.deepEqual(await listGroups(host, '0123456789ab', f.fs), [name]);
    assert.deepEqual(await orphanGroups(host, '0123456789ab', new Set(['c0ffee'])), []);
    // removal: idempotent, and only this group
    await removeGroup(host, name, f.fs);
    await removeGroup(host, name, f.fs);
    assert.equal(existsSync(dir), false);
    assert.equal(existsSync(join(f.mount, 'banger', 'other-1')), true);
    assert.equal(await groupUsage(host, name, f.fs), undefined);
  } finally {
    f.done();
  }
});

test('cgroup v2: a write the kernel refuses fails the step naming the file (E_VMM, step cgroup)', async () => {
  const f = fakeV2();
  try {
    const host = { version: 2 as const, mount: f.mount };
    const fs: CgroupFs = { ...f.fs, write: async (p, t) => (p.endsWith('pids.max') ? Promise.reject(new Error('EINVAL')) : f.fs.write(p, t)) };
    await assert.rejects(createGroup(host, 'i-v', LIMITS, fs), (e: BangerError) => {
      assert.equal(e.code, 'E_VMM');
      assert.equal(e.details?.step, 'cgroup');
      assert.match(e.message, /write 512 to .*banger\/i-v\/pids\.max: EINVAL/);
      return true;
    });
  } finally {
    f.done();
  }
});

test('cgroup v1 limit files: memory.limit_in_bytes, pids.max, cfs quota/period, each in its own hierarchy', () => {
  const host = { version: 1 as const, mounts: { memory: '/cg/memory', pids: '/cg/pids', cpu: '/cg/cpu', cpuacct: '/cg/cpuacct' } };
  assert.deepEqual(limitFiles(host, 'i-v', LIMITS), [
    { path: '/cg/memory/banger/i-v/memory.limit_in_bytes', value: String(1280 * 1048576) },
    { path: '/cg/pids/banger/i-v/pids.max', value: '512' },
    { path: '/cg/cpu/banger/i-v/cpu.cfs_period_us', value: '100000' },
    { path: '/cg/cpu/banger/i-v/cpu.cfs_quota_us', value: '50000' },
  ]);
  assert.equal(limitFiles(host, 'i-v', { memoryBytes: 1, pids: 16 })[3]!.value, '-1');
  assert.deepEqual(groupDirs(host, 'i-v'), ['/cg/memory/banger/i-v', '/cg/pids/banger/i-v', '/cg/cpu/banger/i-v', '/cg/cpuacct/banger/i-v']);
  // co-mounted cpu,cpuacct: one directory
  const co = { version: 1 as const, mounts: { memory: '/m', pids: '/p', cpu: '/c', cpuacct: '/c' } };
  assert.deepEqual(groupDirs(co, 'x'), ['/m/banger/x', '/p/banger/x', '/c/banger/x']);
});

test('detectCgroups: v2 when its controllers are there, else v1 hierarchies (hybrid, co-mounted cpu,cpuacct), else none with the reason', async () => {
  const files = (m: Record<string, string>) => async (p: string) => m[p];
  const v2 = await detectCgroups(
    files({ '/proc/self/mounts': 'cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n', '/sys/fs/cgroup/cgroup.controllers': 'cpu memory pids io\n' }),
  );
  assert.deepEqual(v2, { version: 2, mount: '/sys/fs/cgroup' });
  const mounts =
    'cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,cpu,cpuacct 0 0\ncgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\ncgroup /sys/fs/cgroup/pids cgroup rw,pids 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n';
  assert.deepEqual(cgroup1Mounts(mounts), {
    cpu: '/sys/fs/cgroup/cpu,cpuacct',
    cpuacct: '/sys/fs/cgroup/cpu,cpuacct',
    memory: '/sys/fs/cgroup/memory',
    pids: '/sys/fs/cgroup/pids',
  });
  const v1 = await detectCgroups(files({ '/proc/self/mounts': mounts, '/sys/fs/cgroup/unified/cgroup.controllers': '' }));
  assert.equal(v1.version, 1);
  const none = await detectCgroups(files({ '/proc/self/mounts': 'proc /proc proc rw 0 0\n' }));
  assert.equal(none.version, 0);
});

test('enterArgv: the process writes its own pid to every procs file, then execs argv (same pid); a refused write stops it', () => {
  const dir = mkdtempSync(join(tmpdir(), 'banger-enter-'));
  try {
    const a = join(dir, 'a.procs');
    const b = join(dir, 'b.procs');
    const argv = enterArgv([a, b], ['sh', '-c', 'echo "$$ $1"', 'x', 'arg with space; $(not run)']);
    const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const [pid, arg] = [r.stdout.slice(0, r.stdout.indexOf(' ')), r.stdout.slice(r.stdout.indexOf(' ') + 1).trim()];
    assert.equal(arg, 'arg with space; $(not run)');
    assert.equal(readFileSync(a, 'utf8').trim(), pid);
    assert.equal(readFileSync(b, 'utf8').trim(), pid);
    assert.deepEqual(enterArgv([], ['true']), ['true']);
    mkdirSync(join(dir, 'nodir'));
    const bad = enterArgv([join(dir, 'missing', 'cgroup.procs')], ['sh', '-c', 'echo ran']);
    const rb = spawnSync(bad[0]!, bad.slice(1), { encoding: 'utf8' });
    assert.equal(rb.status, 126);
    assert.equal(rb.stdout, '');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('limitsFor: memory = RAM + overhead and pids when a cgroup is usable; --cpu-quota without one is E_PLATFORM; disk limits need none', () => {
  const cfg = ConfigSchema.parse({}).limits;
  const v2 = { version: 2 as const, mount: '/sys/fs/cgroup' };
  const none = { version: 0 as const, reason: 'no cgroup2 file system mounted' };
  assert.deepEqual(limitsFor(cfg, {}, 1024, v2), { memoryMaxMiB: 1024 + cfg.memoryOverheadMiB, pidsMax: cfg.pidsMax });
  assert.deepEqual(limitsFor(cfg, { cpuQuota: 0.5, diskIops: 100 }, 512, v2), {
    memoryMaxMiB: 512 + cfg.memoryOverheadMiB,
    pidsMax: cfg.pidsMax,
    cpuQuota: 0.5,
    diskIops: 100,
  });
  assert.equal(limitsFor(cfg, {}, 512, none), undefined);
  assert.deepEqual(limitsFor(cfg, { diskBps: 1 << 20 }, 512, none), { diskBps: 1 << 20 });
  assert.throws(
    () => limitsFor(cfg, { cpuQuota: 1 }, 512, none),
    (e: BangerError) => e.code === 'E_PLATFORM' && /no cgroup2 file system mounted/.test(e.message) && e.details?.field === '--cpu-quota',
  );
  assert.throws(() => limitsFor({ ...cfg, cgroup: false, cpuQuota: 2 }, {}, 512, v2), /config limits.cgroup is false/);
  assert.equal(limitsFor({ ...cfg, cgroup: false }, {}, 512, v2), undefined);
  assert.deepEqual(cgroupLimits({ memoryMaxMiB: 10, pidsMax: 20, cpuQuota: 1.5 }), { memoryBytes: 10 * 1048576, pids: 20, cpuQuota: 1.5 });
  assert.equal(cgroupLimits({ diskIops: 5 }), undefined);
});

test('jailer --cgroup arguments for both versions', () => {
  assert.deepEqual(jailerCgroupArgs(2, LIMITS), ['--cgroup', `memory.max=${1280 * 1048576}`, '--cgroup', 'pids.max=512', '--cgroup', 'cpu.max=50000 100000']);
  assert.deepEqual(jailerCgroupArgs(1, { memoryBytes: 2048, pids: 64 }), ['--cgroup', 'memory.limit_in_bytes=2048', '--cgroup', 'pids.max=64']);
  assert.deepEqual(jailerCgroupArgs(1, { memoryBytes: 2048, pids: 64, cpuQuota: 2 }).slice(4), [
    '--cgroup',
    'cpu.cfs_period_us=100000',
    '--cgroup',
    'cpu.cfs_quota_us=200000',
  ]);
  assert.deepEqual(jailerCgroupArgs(2, undefined), []);
});
