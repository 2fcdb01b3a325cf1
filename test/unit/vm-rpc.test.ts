import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCode, isBangerError } from '../../src/core/errors.js';
import { KernelService } from '../../src/kernels/service.js';
import { ImageService } from '../../src/images/service.js';
import { NetworkService } from '../../src/network/service.js';
import { vmMethods } from '../../src/daemon/handlers/vms.js';
import { VmService } from '../../src/vms/service.js';
import type { HostProbe } from '../../src/core/host.js';
import { tempContext } from '../helpers/vmctx.js';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** The RPC boundary: every vm.* input is validated before the service sees it (like kernel.*). */
const methods = vmMethods({} as VmService);
const parse = (m: string, p: unknown) => methods[m]!.schema.safeParse(p);
const field = (m: string, p: unknown) => {
  const r = parse(m, p);
  assert.equal(r.success, false, `${m} ${JSON.stringify(p)} should be refused`);
  return r.success ? '' : r.error.issues[0]!.path.join('.');
};
const VERBS_BY_NAMES = ['vm.start', 'vm.stop', 'vm.restart', 'vm.kill', 'vm.rm', 'vm.pause', 'vm.resume'];
const VERBS_BY_NAME = ['vm.show', 'vm.logs', 'vm.sshInfo', 'vm.ports', 'vm.update'];

test('vm.* methods exist with the agreed names', () => {
  assert.deepEqual(
    Object.keys(methods).sort(),
    [
      ...VERBS_BY_NAMES,
      ...VERBS_BY_NAME,
      'vm.create',
      'vm.list',
      'vm.prune',
      'vm.sshConfig',
      'vm.exec',
      'vm.cpOut',
      'vm.cpIn',
      'vm.stat',
      'vm.extend',
      'vm.snapshot',
      'vm.snapshots',
      'vm.snapshotRm',
      'vm.fork',
    ].sort(),
  );
});

test('names: traversal, separators, over-long and empty names are refused in every verb, naming the field', () => {
  const bad = ['../etc', '..', '.hidden', 'a/b', 'a b', '', 'x'.repeat(64), '-rf', 'a\nb', 'a;b'];
  assert.equal(parse('vm.create', { image: 'img', name: 'x'.repeat(63) }).success, true, '63 characters is the limit');
  for (const n of bad) {
    assert.equal(field('vm.create', { image: 'img', name: n }), 'name', `vm.create name ${JSON.stringify(n)}`);
    assert.equal(field('vm.create', { image: n }), 'image');
    assert.equal(field('vm.create', { image: 'img', kernel: n }), 'kernel');
    for (const m of VERBS_BY_NAMES) assert.equal(field(m, { names: ['ok', n] }), 'names.1', `${m} ${JSON.stringify(n)}`);
    for (const m of VERBS_BY_NAME) assert.equal(field(m, { name: n }), 'name', `${m} ${JSON.stringify(n)}`);
  }
  for (const m of VERBS_BY_NAMES) {
    assert.equal(field(m, { names: [] }), 'names', `${m}: at least one name`);
    assert.equal(field(m, { names: Array.from({ length: 65 }, (_, i) => `v${i}`) }), 'names', `${m}: at most 64 names`);
    assert.equal(field(m, { names: ['a'], extra: 1 }), '', `${m}: unknown fields refused`);
  }
});

test('vm.create / vm.update: egress fields are validated at the boundary, naming the field', () => {
  assert.equal(parse('vm.create', { image: 'img', egress: 'deny', allow: ['192.0.2.7:443', '10.0.0.0/8'], allowVm: ['other'] }).success, true);
  assert.equal(field('vm.create', { image: 'img', egress: 'open' }), 'egress');
  assert.equal(field('vm.create', { image: 'img', allow: ['a b'] }), 'allow.0');
  assert.equal(field('vm.create', { image: 'img', allow: ['x'.repeat(265)] }), 'allow.0');
  assert.equal(parse('vm.create', { image: 'img', allow: ['PyPI.org:443', 'my-host.example.com'] }).success, true, 'hostname allows pass the shape check');
  assert.equal(field('vm.create', { image: 'img', allow: Array.from({ length: 65 }, () => '10.0.0.1') }), 'allow');
  assert.equal(field('vm.create', { image: 'img', allowVm: ['../x'] }), 'allowVm.0');
  assert.equal(parse('vm.update', { name: 'v', egress: 'allow', allow: ['192.0.2.7'], deny: ['192.0.2.8'], allowVm: ['a'], denyVm: ['b'] }).success, true);
  assert.equal(field('vm.update', { name: 'v', deny: ['$(x)'] }), 'deny.0');
  assert.equal(field('vm.update', { name: 'v', denyVm: ['a/b'] }), 'denyVm.0');
});

test('vm.create: vcpu, memory and disk bounds and types name their field', () => {
  const ok = { image: 'img' };
  assert.equal(parse('vm.create', { ...ok, vcpu: 1, memoryMiB: 128, diskSize: '8G', workDisk: '1G', nat: true, wait: false, vmm: 'qemu' }).success, true);
  assert.equal(parse('vm.create', { ...ok, vcpu: 32, memoryMiB: 1024 * 1024 }).success, true);
  for (const vcpu of [0, -1, 33, 1.5, '2', null]) assert.equal(field('vm.create', { ...ok, vcpu }), 'vcpu', `vcpu ${vcpu}`);
  for (const memoryMiB of [0, 127, 1024 * 1024 + 1, 512.5, '512'])
    assert.equal(field('vm.create', { ...ok, memoryMiB }), 'memoryMiB', `memoryMiB ${memoryMiB}`);
  for (const diskSize of ['', 'x'.repeat(33), 8]) assert.equal(field('vm.create', { ...ok, diskSize }), 'diskSize');
  assert.equal(field('vm.create', { ...ok, workDisk: '' }), 'workDisk');
  assert.equal(field('vm.create', { ...ok, vmm: 'kvmtool' }), 'vmm');
  assert.equal(field('vm.create', { ...ok, nat: 'yes' }), 'nat');
  assert.equal(field('vm.create', { ...ok, rootfs: '/etc/shadow' }), '', 'unknown fields refused');
  assert.equal(field('vm.kill', { names: ['a'], signal: 'SIGSEGV' }), 'signal');
  assert.equal(field('vm.logs', { name: 'a', offset: -1 }), 'offset');
});

const host: HostProbe = { which: async (c) => `/usr/bin/${c}`, readFile: async () => '', canReadWrite: async () => false };

function service() {
  const t = tempContext();
  const kernels = new KernelService(t.ctx);
  const images = new ImageService(t.ctx, { kernels });
  const vms = new VmService(t.ctx, { kernels, images, network: new NetworkService(t.ctx) }, { host, bangerGid: 0 });
  const kdir = join(t.ctx.layout.kernels, 'k');
  mkdirSync(kdir, { recursive: true });
  writeFileSync(join(kdir, 'vmlinuz'), 'x');
  t.ctx.db.prepare("INSERT INTO kernels (name, source, vmlinux_sha256, path, created_at) VALUES ('k', 'import:test', 'x', ?, 'now')").run(kdir);
  t.ctx.db
    .prepare(
      "INSERT INTO images (name, source_ref, rootfs_path, kernel_ref, from_registry, created_at) VALUES ('img', 't', '/nonexistent/rootfs.ext4', 'k', 1, 'now')",
    )
    .run();
  return { t, vms };
}

test('unknown VMs: every verb answers E_NOT_FOUND naming the VM, and changes nothing', async () => {
  const { t, vms } = service();
  try {
    const calls: [string, () => Promise<unknown>][] = [
      ['start', () => vms.start(['ghost'])],
      ['stop', () => vms.stop(['ghost'])],
      ['restart', () => vms.restart(['ghost'])],
      ['kill', () => vms.kill(['ghost'])],
      ['rm', () => vms.rm(['ghost'])],
      ['rm --force', () => vms.rm(['ghost'], true)],
      ['show', () => vms.show('ghost')],
      ['logs', () => vms.logs('ghost')],
      ['sshInfo', () => vms.sshInfo('ghost')],
      ['ports', () => vms.ports('ghost')],
    ];
    for (const [verb, call] of calls) {
      await assert.rejects(call(), (e) => {
        assert.ok(isBangerError(e, ErrorCode.NotFound), `${verb}: ${String(e)}`);
        assert.match(e.message, /vm 'ghost' not found/, verb);
        assert.deepEqual(e.details, { vm: 'ghost' }, verb);
        return true;
      });
    }
  } finally {
    t.cleanup();
  }
});

test('vm.create sizes: unparsable, zero and absurd sizes name the flag; nothing is created', async () => {
  const { t, vms } = service();
  try {
    for (const [flag, key, v] of [
      ['--disk-size', 'diskSize', 'lots'],
      ['--disk-size', 'diskSize', '0'],
      ['--disk-size', 'diskSize', '17T'],
      ['--work-disk', 'workDisk', '-1G'],
      ['--work-disk', 'workDisk', '99999T'],
    ] as const) {
      await assert.rejects(vms.create({ image: 'img', name: 'v', [key]: v }), (e) => {
        assert.ok(isBangerError(e, ErrorCode.Invalid), `${flag} ${v}: ${String(e)}`);
        assert.ok(e.message.startsWith(`${flag} '${v}': `), e.message);
        assert.deepEqual(e.details, { field: flag });
        return true;
      });
    }
    assert.deepEqual(t.ctx.db.prepare('SELECT * FROM vms').all(), []);
    assert.deepEqual(t.ctx.db.prepare('SELECT * FROM ip_leases').all(), []);
  } finally {
    t.cleanup();
  }
});

test('vm.exec / vm.cp* / vm.stat: argv, env, workdir, user and paths are validated, naming the field', () => {
  const ok = { name: 'box', argv: ['true'] };
  assert.equal(parse('vm.exec', ok).success, true);
  assert.equal(parse('vm.exec', { ...ok, env: ['A=1', 'B_2='], workdir: '/srv', user: '1000:1000', tty: true, rows: 24, cols: 80 }).success, true);
  assert.equal(field('vm.exec', { name: 'box', argv: [] }), 'argv');
  assert.equal(field('vm.exec', { ...ok, argv: ['a\0b'] }), 'argv.0');
  assert.equal(field('vm.exec', { ...ok, env: ['NOEQUALS'] }), 'env.0');
  assert.equal(field('vm.exec', { ...ok, env: ['1A=x'] }), 'env.0');
  assert.equal(field('vm.exec', { ...ok, workdir: 'relative' }), 'workdir');
  assert.equal(field('vm.exec', { ...ok, user: 'a;b' }), 'user');
  assert.equal(field('vm.exec', { ...ok, rows: 70000 }), 'rows');
  assert.equal(field('vm.exec', { ...ok, extra: 1 }), ''); // strict: an unknown key is refused at the top level
  for (const m of ['vm.cpOut', 'vm.cpIn', 'vm.stat']) {
    assert.equal(parse(m, { name: 'box', path: '/etc' }).success, true);
    assert.equal(field(m, { name: 'box', path: 'etc' }), 'path', m);
    assert.equal(field(m, { name: '../x', path: '/etc' }), 'name', m);
  }
});
