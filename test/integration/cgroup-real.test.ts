import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { detectCgroups } from '../../src/core/cgroup.js';
import { createGroup, enterArgv, groupDirs, groupName, groupUsage, limitFiles, procsFiles, removeGroup } from '../../src/core/cgroup-group.js';
import { realHost } from '../../src/core/host.js';
import { isRoot } from '../helpers/daemon.js';

/**
 * core/cgroup-group.ts against the real kernel: whatever hierarchy this host offers (on our CI
 * machines, and the one this was written on, cgroup v1: the unified v2 mount there has no
 * controllers, so this is the v1 code path; the v2 file logic is unit-tested on a fake tree).
 * A group is made with limits, a process started through `enterArgv` is inside it in every
 * hierarchy from its start, and the kernel enforces each limit: a fork past pids.max fails, an
 * allocation past the memory limit is OOM-killed inside the group, a busy loop is throttled by
 * the CPU quota; removal kills what is left and removes every directory.
 */
const skip = !isRoot() ? 'needs root (cgroups)' : undefined;

function sh(argv: string[]): { code: number | null; out: string; err: string } {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

async function waitFor(what: string, f: () => boolean, ms = 20_000): Promise<void> {
  for (const end = Date.now() + ms; Date.now() < end; ) {
    if (f()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.fail(`timed out waiting for ${what}`);
}

test('real cgroup hierarchy: group made with limits, process inside from its start, pids/memory/cpu enforced, removal leaves nothing', {
  skip,
  timeout: 120_000,
}, async () => {
  const host = await detectCgroups(realHost.readFile);
  assert.notEqual(host.version, 0, `this host offers no usable cgroup: ${host.version === 0 ? host.reason : ''}`);
  if (host.version === 0) return;
  const name = groupName(randomBytes(6).toString('hex'), randomBytes(10).toString('hex'));
  const limits = { memoryBytes: 64 * 1048576, pids: 12, cpuQuota: 0.1 };
  let sleeper: ReturnType<typeof spawn> | undefined;
  try {
    await createGroup(host, name, limits);
    const dirs = groupDirs(host, name);
    for (const d of dirs) assert.ok(existsSync(d), d);
    for (const f of limitFiles(host, name, limits)) assert.equal(readFileSync(f.path, 'utf8').trim(), f.value, f.path);

    // inside from the start, in every hierarchy
    const argv = enterArgv(procsFiles(host, name), ['sleep', '300']);
    sleeper = spawn(argv[0]!, argv.slice(1), { stdio: 'ignore' });
    await waitFor('sleep in the group', () => readFileSync(`/proc/${sleeper!.pid}/cmdline`, 'utf8').startsWith('sleep'));
    const mine = readFileSync(`/proc/${sleeper.pid}/cgroup`, 'utf8');
    if (host.version === 1) {
      for (const c of ['memory', 'pids', 'cpu']) assert.match(mine, new RegExp(`^\\d+:[^:]*\\b${c}\\b[^:]*:/banger/${name}$`, 'm'), `${c}: ${mine}`);
    } else assert.match(mine, new RegExp(`^0::/banger/${name}$`, 'm'));
    for (const p of procsFiles(host, name)) assert.ok(readFileSync(p, 'utf8').split('\n').includes(String(sleeper.pid)), p);

    // the memory limit holds: 200 MiB held in one process in a 64 MiB group → OOM-killed in the group
    const hog = sh(enterArgv(procsFiles(host, name), ['sh', '-c', 'head -c 200M /dev/zero | tail > /dev/null; echo "rc=$?"']));
    assert.match(hog.out, /rc=137\b/, `the hog was not killed: ${hog.out} ${hog.err}`);
    const u2 = (await groupUsage(host, name))!;
    assert.ok((u2.oomKills ?? 0) >= 1, `oom kills ${u2.oomKills}`);
    assert.equal(u2.memoryMaxBytes, 64 * 1048576);
    assert.ok(u2.memoryPeakBytes === undefined || u2.memoryPeakBytes <= 64 * 1048576, `peak ${u2.memoryPeakBytes}`);
    assert.ok(existsSync(`/proc/${sleeper.pid}`), 'the sleeper outlived the OOM kill of the hog');

    // the CPU quota holds: a busy loop gets throttled (cpu.stat nr_throttled rises)
    const cpuDir = dirs.find((d) => existsSync(join(d, host.version === 1 ? 'cpu.cfs_quota_us' : 'cpu.max')))!;
    const throttled = () => Number(/nr_throttled (\d+)/.exec(readFileSync(join(cpuDir, 'cpu.stat'), 'utf8'))?.[1] ?? 0);
    const before = throttled();
    const busyArgv = enterArgv(procsFiles(host, name), ['sh', '-c', 'while :; do :; done']);
    const busy = spawn(busyArgv[0]!, busyArgv.slice(1), { stdio: 'ignore' });
    await waitFor('the busy loop throttled by the quota', () => throttled() > before + 2);
    assert.equal((await groupUsage(host, name))!.cpuQuota, 0.1);
    assert.ok(((await groupUsage(host, name))!.cpuUsageUsec ?? 1) > 0);

    // pids.max holds: 30 background sleeps in a group allowing 12 tasks (the sleeper is one)
    const forks = sh(enterArgv(procsFiles(host, name), ['sh', '-c', 'n=0; for i in $(seq 30); do sleep 5 & n=$((n+1)); done; echo started']));
    const u1 = (await groupUsage(host, name))!;
    assert.ok(u1.pidsCurrent <= 12, `pids.current ${u1.pidsCurrent} > pids.max 12`);
    assert.equal(u1.pidsMax, 12);
    assert.ok(u1.pidsCurrent >= 2, 'the sleeper and some forks ran inside');
    // (the shell's fork failures are the limit at work: the kernel refused the 13th task)
    assert.match(forks.err, /fork|Resource temporarily unavailable|Cannot fork/i, `no fork was refused: ${forks.err}`);

    // removal: the processes left inside are killed, every directory goes; idempotent
    await removeGroup(host, name);
    for (const d of dirs) assert.equal(existsSync(d), false, `${d} left`);
    await waitFor('processes killed', () => sleeper!.exitCode !== null || sleeper!.signalCode !== null);
    await waitFor('busy loop killed', () => busy.exitCode !== null || busy.signalCode !== null);
    await removeGroup(host, name);
  } finally {
    try {
      sleeper?.kill('SIGKILL');
    } catch {
      /* gone */
    }
    await removeGroup(host, name).catch(() => undefined);
  }
});
