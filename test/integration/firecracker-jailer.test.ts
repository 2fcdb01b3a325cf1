import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isRoot } from '../helpers/daemon.js';
import { jailPlan, prepareJail, removeJail, type JailerConfig } from '../../src/vms/drivers/firecracker/jailer.js';
import { bootRequests } from '../../src/vms/drivers/firecracker/requests.js';
import { loadSpec } from '../helpers/firecracker-spec.js';

/**
 * Jailer layout (partial jailer support: no jailer binary runs here): the plan's argv and
 * paths, files hard-linked into a real chroot directory with the VM's own disks chowned to the
 * VM's uid/gid and shared read-only files left alone, chroot-relative API bodies valid against
 * the spec, and removal.
 */
const skip = isRoot() ? undefined : 'needs root (chown)';

test('jail plan, preparation with owners, chroot-relative bodies, removal', { skip }, async () => {
  const base = mkdtempSync(join(tmpdir(), 'banger-jail-'));
  try {
    const cfg: JailerConfig = { binary: '/usr/bin/jailer', chrootBase: join(base, 'srv'), uidBase: 900_000, cgroupVersion: 2, parentCgroup: 'banger' };
    const plan = jailPlan(cfg, { firecracker: '/usr/bin/firecracker', id: 'bg-0123456789ab-ffeeddccbbaa9988abcd', vmId: 'ffeeddccbbaa9988abcd' });
    assert.equal(plan.uid, 900_000 + 0xabcd);
    assert.equal(plan.root, join(base, 'srv', 'firecracker', 'bg-0123456789ab-ffeeddccbbaa9988abcd', 'root'));
    assert.equal(plan.apiSocketHost, join(plan.root, 'run', 'firecracker.socket'));
    assert.equal(plan.pidFileHost, join(plan.root, 'firecracker.pid'));
    assert.deepEqual(plan.argv.slice(plan.argv.indexOf('--')), ['--', '--api-sock', '/run/firecracker.socket']);
    assert.throws(() => jailPlan(cfg, { firecracker: 'f', id: 'bad id!', vmId: 'ab' }));

    const vm = join(base, 'vm');
    mkdirSync(vm);
    for (const f of ['vmlinux', 'root.ext4', 'seed.ext4', 'modules.ext4']) writeFileSync(join(vm, f), f);
    const paths = await prepareJail(plan, [
      { name: 'vmlinux', hostPath: join(vm, 'vmlinux'), owned: false },
      { name: 'root.ext4', hostPath: join(vm, 'root.ext4'), owned: true },
      { name: 'seed.ext4', hostPath: join(vm, 'seed.ext4'), owned: true },
      { name: 'modules.ext4', hostPath: join(vm, 'modules.ext4'), owned: false },
    ]);
    assert.deepEqual(paths, { vmlinux: '/vmlinux', 'root.ext4': '/root.ext4', 'seed.ext4': '/seed.ext4', 'modules.ext4': '/modules.ext4' });
    const st = (n: string) => statSync(join(plan.root, n));
    assert.equal(st('root.ext4').ino, statSync(join(vm, 'root.ext4')).ino, 'hard link');
    assert.deepEqual([st('root.ext4').uid, st('root.ext4').gid], [plan.uid, plan.gid]);
    assert.deepEqual([st('modules.ext4').uid, st('vmlinux').uid], [0, 0], 'shared files keep their owner');
    assert.equal(statSync(join(plan.root, 'run')).uid, plan.uid);
    assert.equal(readFileSync(join(plan.root, 'seed.ext4'), 'utf8'), 'seed.ext4');

    const reqs = bootRequests({
      vcpu: 1,
      memoryMiB: 128,
      kernel: paths.vmlinux!,
      bootArgs: 'console=ttyS0',
      disks: [
        { id: 'root', path: paths['root.ext4']! },
        { id: 'seed', path: paths['seed.ext4']! },
        { id: 'modules', path: paths['modules.ext4']!, readOnly: true },
      ],
      vsock: { cid: 3, udsPath: '/vsock.sock' },
    });
    const spec = loadSpec('v1.16.1');
    for (const r of reqs) assert.ok(spec.validator(r.definition!)(r.body), r.step);
    assert.ok(
      reqs.every((r) => !JSON.stringify(r.body).includes(base)),
      'no host path reaches the API',
    );

    await removeJail(plan);
    assert.ok(!existsSync(plan.jailDir));
    assert.ok(existsSync(join(vm, 'root.ext4')), 'the VM directory is untouched');
    await removeJail(plan); // idempotent
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
});

test('the stand-in jailer refuses unknown, missing and repeated flags and creates nothing then', { skip }, async () => {
  const { makeStandinJailer } = await import('../helpers/firecracker-standin/index.js');
  const { spawnSync } = await import('node:child_process');
  const j = makeStandinJailer();
  const base = mkdtempSync(join(tmpdir(), 'banger-jailargv-'));
  try {
    writeFileSync(join(base, 'firecracker'), '#!/bin/sh\n');
    const ok = ['--id', 'x1', '--exec-file', join(base, 'firecracker'), '--uid', '1', '--gid', '1', '--chroot-base-dir', join(base, 'srv')];
    const run = (args: string[]) => spawnSync(j.binary, args, { encoding: 'utf8' });
    for (const [args, msg] of [
      [[...ok, '--bogus', '1'], /Found argument '--bogus'/],
      [ok.filter((_, i) => i !== 6 && i !== 7), /Missing required argument '--gid'/],
      [[...ok, '--id', 'x2'], /--id given twice/],
      [[...ok.slice(0, 3), join(base, 'vmm'), ...ok.slice(4)], /Failed to canonicalize/],
      [[...ok, '--cgroup-version', '3'], /Invalid cgroup version/],
    ] as const) {
      const r = run([...args]);
      assert.equal(r.status, 1, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, msg);
    }
    assert.ok(!existsSync(join(base, 'srv')), 'nothing created on refusal');
  } finally {
    j.remove();
    rmSync(base, { recursive: true, force: true });
  }
});
