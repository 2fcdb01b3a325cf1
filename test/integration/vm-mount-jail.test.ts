import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exec } from '../../src/core/exec.js';
import { detectCgroups } from '../../src/core/cgroup.js';
import { createGroup, groupName, procsFiles, removeGroup } from '../../src/core/cgroup-group.js';
import { realHost } from '../../src/core/host.js';
import { defaultFsJail, findVirtiofsd, startVirtiofsd, stopVirtiofsd, virtiofsSocket } from '../../src/vms/drivers/qemu/mounts.js';
import { parseMountSpec } from '../../src/vms/publish-spec.js';
import { isRoot } from '../helpers/daemon.js';

/**
 * The host half of a read-write --mount without a guest: banger-fsjail itself (what a guest's
 * requests become inside virtiofsd: chmod, mknod, open with a mode, as the process that serves
 * them) and the real virtiofsd started and stopped by startVirtiofsd/stopVirtiofsd. The guest
 * half (a real guest doing the same through virtiofs) is e2e/vm-publish.test.ts.
 */
const skip = !isRoot() ? 'needs root (user namespaces, mounts)' : undefined;
const OWNER = 4242;
const GROUP = 4243;

function jail(dir: string, script: string): { code: number | null; out: string } {
  const r = spawnSync(defaultFsJail(), [String(OWNER), String(GROUP), 'sh', '-c', script, 'sh', dir], { encoding: 'utf8' });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

test('banger-fsjail: the program runs as the namespace root = OWNER:GROUP; setuid/setgid modes and device nodes are refused, plain files work', {
  skip,
}, () => {
  const dir = mkdtempSync(join(tmpdir(), 'banger-fsjail-'));
  try {
    chownSync(dir, OWNER, GROUP);
    const r = jail(
      dir,
      [
        'cd "$1"',
        'echo "id=$(id -u):$(id -g)"',
        'echo data > f; echo write=$?',
        'chmod 4755 f; echo suid=$?',
        'chmod 2755 f; echo sgid=$?',
        'chmod 1755 f; echo sticky=$?',
        'chmod 0640 f; echo plain=$?',
        'install -m 4755 f g; echo install=$?',
        'mknod c c 1 1; echo chr=$?',
        'mknod b b 7 0; echo blk=$?',
        'mknod p p; echo fifo=$?',
        'mkdir -m 2775 d2; echo mkdirsgid=$?',
        'mkdir d; echo mkdir=$?',
        'touch /etc/banger-fsjail-canary; echo outside=$?',
      ].join('\n'),
    );
    assert.equal(r.code, 0, r.out);
    for (const want of [
      'id=0:0',
      'write=0',
      'suid=1',
      'sgid=1',
      'sticky=0',
      'plain=0',
      'install=1',
      'chr=1',
      'blk=1',
      'fifo=0',
      'mkdirsgid=1',
      'mkdir=0',
      'outside=1',
    ])
      assert.match(r.out, new RegExp(`^${want}$`, 'm'), r.out);
    const f = lstatSync(join(dir, 'f'));
    assert.equal(`${f.uid}:${f.gid} ${(f.mode & 0o7777).toString(8)}`, `${OWNER}:${GROUP} 640`, 'created as OWNER:GROUP, no setuid');
    for (const n of ['c', 'b', 'd2']) assert.equal(existsSync(join(dir, n)), false, n);
    const g = lstatSync(join(dir, 'g'), { throwIfNoEntry: false });
    assert.ok(!g || (g.mode & 0o6000) === 0, 'install -m 4755 left no setuid file');
    assert.equal(existsSync('/etc/banger-fsjail-canary'), false);
    // refuses to map to root, and to run unprivileged
    const root = spawnSync(defaultFsJail(), ['0', '0', 'true'], { encoding: 'utf8' });
    assert.notEqual(root.status, 0);
    assert.match(root.stderr, /other than 0/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('startVirtiofsd: a rw mount runs virtiofsd as the folder owner in its own user namespace; a ro mount as root; stop kills exactly them', {
  skip,
  timeout: 60_000,
}, async () => {
  const bin = await findVirtiofsd();
  assert.ok(bin, 'virtiofsd is installed (Debian 12: qemu-system-common, scripts/install-deps.sh)');
  const work = mkdtempSync(join(tmpdir(), 'banger-vfsd-'));
  chmodSync(work, 0o755); // the owner must be able to reach HOSTDIR
  const vmDir = join(work, 'vm');
  mkdirSync(vmDir, { mode: 0o700 });
  const rwDir = join(work, 'rw');
  const roDir = join(work, 'ro');
  mkdirSync(rwDir);
  mkdirSync(roDir);
  chownSync(rwDir, OWNER, GROUP);
  const rw = { ...parseMountSpec(`${rwDir}:/mnt/rw`, 0), kind: 'virtiofs' as const };
  const ro = { ...parseMountSpec(`${roDir}:/mnt/ro:ro`, 1), kind: 'virtiofs' as const };
  // virtiofsd runs in its VM's cgroup (docs/limits.md): a real group on this host's hierarchy
  const cg = await detectCgroups(realHost.readFile);
  assert.notEqual(cg.version, 0, 'this host offers a cgroup hierarchy (v1 or v2)');
  const group = groupName('feedc0ffee00', `vfsd${process.pid}`);
  if (cg.version !== 0) await createGroup(cg, group, { memoryBytes: 256 * 1048576, pids: 256 });
  const procs = cg.version !== 0 ? procsFiles(cg, group) : [];
  try {
    await startVirtiofsd(exec, vmDir, [rw, ro], { cgroup: procs });
    const pids = [rw, ro].map((m) => Number(readFileSync(join(vmDir, `virtiofs-${m.tag}.pid`), 'utf8').split(' ')[0]));
    for (const m of [rw, ro]) assert.ok(lstatSync(virtiofsSocket(vmDir, m)).isSocket(), `socket for ${m.tag}`);
    const ids = pids.map((p) =>
      readFileSync(`/proc/${p}/status`, 'utf8')
        .match(/^Uid:\s+(\d+)\s+(\d+)/m)!
        .slice(1, 3)
        .join(','),
    );
    assert.equal(ids[0], `${OWNER},${OWNER}`, 'rw virtiofsd runs as the folder owner');
    assert.equal(ids[1], '0,0', 'ro virtiofsd runs as root');
    for (const p of procs) for (const pid of pids) assert.ok(readFileSync(p, 'utf8').split('\n').includes(String(pid)), `virtiofsd ${pid} in ${p}`);
    assert.notEqual(readlinkSync(`/proc/${pids[0]}/ns/user`), readlinkSync('/proc/self/ns/user'), 'rw virtiofsd is in its own user namespace');
    assert.match(readFileSync(`/proc/${pids[0]}/status`, 'utf8'), /^Seccomp:\s+2/m, 'under a seccomp filter');
    // the folders themselves are untouched on the host (the binds are private to virtiofsd)
    assert.doesNotMatch(readFileSync('/proc/self/mountinfo', 'utf8'), new RegExp(` ${rwDir} | ${roDir} `));
    await stopVirtiofsd(vmDir, [rw, ro]);
    for (const p of pids)
      assert.equal(existsSync(`/proc/${p}/cmdline`) && readFileSync(`/proc/${p}/cmdline`, 'utf8').length > 0, false, `virtiofsd ${p} stopped`);
    for (const m of [rw, ro]) assert.equal(existsSync(join(vmDir, `virtiofs-${m.tag}`)), false);
  } finally {
    await stopVirtiofsd(vmDir, [rw, ro]).catch(() => undefined);
    if (cg.version !== 0) await removeGroup(cg, group);
    rmSync(work, { recursive: true, force: true });
  }
});

test('startVirtiofsd: a rw folder owned by root is refused before anything starts', { skip }, async () => {
  const bin = await findVirtiofsd();
  assert.ok(bin, 'virtiofsd is installed');
  const work = mkdtempSync(join(tmpdir(), 'banger-vfsd-'));
  try {
    const m = { ...parseMountSpec(`${work}:/mnt/rw`, 0), kind: 'virtiofs' as const };
    mkdirSync(join(work, 'vm'));
    await assert.rejects(startVirtiofsd(exec, join(work, 'vm'), [m]), /owned by root/);
    assert.equal(existsSync(join(work, 'vm', 'virtiofs-banger0')), false);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});
