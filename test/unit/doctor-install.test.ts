import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { kvmUsable, runChecks, type HostProbe } from '../../src/doctor/checks.js';
import { systemInstall, UNIT_PLAIN_KEYS, UNIT_RESTRICTIONS, unitText } from '../../src/cli/install.js';
import { bangerGid } from '../../src/core/group.js';

function fakeHost(over: Partial<{ tools: string[]; files: Record<string, string>; rw: string[] }>): HostProbe {
  const tools = over.tools ?? [];
  const files = over.files ?? {};
  const rw = over.rw ?? [];
  return {
    which: async (c) => (tools.includes(c) ? `/usr/bin/${c}` : undefined),
    readFile: async (p) => files[p],
    canReadWrite: async (p) => rw.includes(p),
  };
}

test('KVM is usable only with a read-write /dev/kvm AND vmx/svm flags', async () => {
  const flags = { '/proc/cpuinfo': 'processor : 0\nflags : fpu vme sse2 vmx ept\n' };
  assert.equal((await kvmUsable(fakeHost({ rw: ['/dev/kvm'], files: flags }))).usable, true);
  const nested = await kvmUsable(fakeHost({ rw: ['/dev/kvm'], files: { '/proc/cpuinfo': 'flags : fpu sse2 hypervisor\n' } }));
  assert.equal(nested.usable, false);
  assert.match(nested.reason, /no vmx\/svm/);
  assert.equal((await kvmUsable(fakeHost({ files: flags }))).usable, false);
});

test('doctor: every check named, pass/warn/fail with hints, skip by name', async () => {
  const all = ['qemu-system-x86_64', 'mkfs.ext4', 'debugfs', 'ip', 'nft', 'ssh', 'gpgv', 'dpkg-deb', 'lz4', 'depmod'];
  const ok = await runChecks(
    fakeHost({ tools: all, rw: ['/dev/net/tun'], files: { '/proc/sys/net/ipv4/ip_forward': '1\n', '/usr/share/keyrings/debian-archive-keyring.gpg': 'k' } }),
  );
  assert.deepEqual(
    ok.map((r) => r.name),
    [
      'node',
      'kvm',
      'firecracker',
      'qemu',
      'mkfs.ext4',
      'debugfs',
      'ip',
      'nat',
      'ssh',
      'gpgv',
      'dpkg-deb',
      'lz4',
      'depmod',
      'debian-keyring',
      'tun',
      'ip_forward',
      'cgroup',
    ],
  );
  assert.equal(ok.filter((r) => r.status === 'fail').length, 0);
  assert.equal(ok.find((r) => r.name === 'kvm')!.status, 'warn');
  const bad = await runChecks(fakeHost({ tools: ['iptables'] }), ['kvm']);
  assert.ok(!bad.some((r) => r.name === 'kvm'));
  const qemu = bad.find((r) => r.name === 'qemu')!;
  assert.equal(qemu.status, 'fail');
  assert.match(qemu.hint!, /apt-get install qemu-system-x86/);
  assert.match(bad.find((r) => r.name === 'nat')!.detail, /iptables fallback/);
  assert.equal(bad.find((r) => r.name === 'tun')!.status, 'fail');
  assert.equal(bad.find((r) => r.name === 'debian-keyring')!.status, 'warn');
  assert.equal(bad.find((r) => r.name === 'gpgv')!.status, 'fail');
});

test('doctor cgroup: says which version banger uses (v2 on the unified mount, v1 on a hybrid host), warns when neither has memory, pids and cpu', async () => {
  const v2 = 'cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0\n';
  const v1 = ['memory', 'pids', 'cpu'].map((c) => `cgroup /sys/fs/cgroup/${c} cgroup rw,relatime,${c} 0 0`).join('\n');
  const hybrid = `${v1}\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n`;
  const run = async (files: Record<string, string>) => (await runChecks(fakeHost({ files }))).find((r) => r.name === 'cgroup')!;
  const ok = await run({ '/proc/self/mounts': v2, '/sys/fs/cgroup/cgroup.controllers': 'cpuset cpu io memory hugetlb pids rdma misc\n' });
  assert.deepEqual([ok.status, ok.detail], ['pass', 'banger uses cgroup v2 at /sys/fs/cgroup (memory, pids, cpu)']);
  const h = await run({ '/proc/self/mounts': hybrid, '/sys/fs/cgroup/unified/cgroup.controllers': 'hugetlb\n' });
  assert.equal(h.status, 'pass');
  assert.match(h.detail, /^banger uses cgroup v1: memory at \/sys\/fs\/cgroup\/memory, pids at \/sys\/fs\/cgroup\/pids, cpu at \/sys\/fs\/cgroup\/cpu/);
  const noPids = await run({ '/proc/self/mounts': `cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n` });
  assert.equal(noPids.status, 'warn');
  assert.equal(noPids.detail, 'cgroup v2 at /sys/fs/cgroup/unified lacks memory, pids, cpu and no cgroup v1 hierarchy has pids, cpu');
  assert.match(noPids.hint!, /--cpu-quota is refused/);
  const none = await run({ '/proc/self/mounts': 'proc /proc proc rw 0 0\n' });
  assert.deepEqual([none.status, none.detail], ['warn', 'no cgroup2 file system mounted and no cgroup v1 hierarchy has memory, pids, cpu']);
});

test('doctor reports the Node.js runtime: path, version, LTS line; older than 22.19 fails with a hint', async () => {
  const own = (await runChecks(fakeHost({}))).find((r) => r.name === 'node')!;
  assert.equal(own.status, 'pass');
  assert.ok(own.detail.startsWith(`${process.execPath} ${process.version}`), own.detail);
  const run = async (version: string, lts?: string) =>
    (await runChecks({ ...fakeHost({}), runtime: () => ({ path: '/opt/n/bin/node', version, lts }) })).find((r) => r.name === 'node')!;
  const krypton = await run('v24.22.3', 'Krypton');
  assert.deepEqual([krypton.status, krypton.detail], ['pass', '/opt/n/bin/node v24.22.3 (LTS Krypton)']);
  assert.equal((await run('v22.19.0', 'Jod')).status, 'pass');
  assert.deepEqual([(await run('v26.12.1')).status, (await run('v26.12.1')).detail], ['pass', '/opt/n/bin/node v26.12.1 (not an LTS release)']);
  const old = await run('v22.18.0', 'Jod');
  assert.equal(old.status, 'fail');
  assert.match(old.hint!, /22\.19.*install-deps\.sh/);
  assert.equal((await run('v20.20.2', 'Iron')).status, 'fail');
});

test('system install writes the unit and creates the banger group under a temporary root', async () => {
  const root = mkdtempSync(join(tmpdir(), 'banger-install-'));
  mkdirSync(join(root, 'etc'));
  writeFileSync(join(root, 'etc/group'), 'root:x:0:\nsystemd-journal:x:999:\n');
  const r = await systemInstall({ destRoot: root, bangerdPath: '/opt/banger/bin/bangerd', nodePath: '/usr/bin/node' });
  assert.equal(r.unitPath, join(root, 'etc/systemd/system/bangerd.service'));
  const unit = readFileSync(r.unitPath, 'utf8');
  assert.match(unit, /^ExecStart=\/usr\/bin\/node \/opt\/banger\/bin\/bangerd$/m);
  assert.match(unit, /^KillMode=process$/m);
  assert.match(unit, /^Restart=on-failure$/m, 'systemd restarts a bangerd that died');
  assert.equal(statSync(r.unitPath).mode & 0o777, 0o644);
  assert.deepEqual(r.group, { name: 'banger', gid: 998, created: true });
  assert.equal(await bangerGid(join(root, 'etc/group')), 998);
  const again = await systemInstall({ destRoot: root, bangerdPath: '/opt/banger/bin/bangerd', nodePath: '/usr/bin/node' });
  assert.equal(again.group.created, false);
  assert.equal(readFileSync(join(root, 'etc/group'), 'utf8').match(/^banger:/gm)!.length, 1);
  assert.equal(unitText('/n', '/b').includes('WantedBy=multi-user.target'), true);
  rmSync(root, { recursive: true, force: true });
});

test('the unit: hardened, and its [Service] keys are exactly the restrictions e2e/package applies plus plain settings', () => {
  const body = unitText('/n', '/b').split('[Service]')[1]!.split('[Install]')[0]!;
  const keys = body
    .split('\n')
    .filter((l) => /^[A-Za-z]+=/.test(l))
    .map((l) => l.split('=')[0]!);
  assert.deepEqual([...new Set(keys)].sort(), [...UNIT_RESTRICTIONS, ...UNIT_PLAIN_KEYS].sort());
  for (const line of [
    'ProtectSystem=strict',
    'ProtectHome=read-only',
    'NoNewPrivileges=yes',
    'LimitNOFILE=65536',
    'TasksMax=16384',
    'RuntimeDirectory=banger virtiofsd',
  ])
    assert.ok(body.includes(`\n${line}\n`), line);
  assert.match(body, /^ReadWritePaths=\/var\/lib\/banger /m);
  for (const off of ['PrivateTmp=', 'PrivateDevices=', 'ProtectKernelTunables=', 'ProtectControlGroups='])
    assert.ok(!new RegExp(`^${off}`, 'm').test(body), `${off} stays off`);
});
