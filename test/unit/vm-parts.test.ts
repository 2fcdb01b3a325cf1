import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QemuDriver, qemuArgv, qemuLaunch, qopt, type QemuLaunch } from '../../src/vms/drivers/qemu/index.js';
import { DriverRegistry } from '../../src/vms/drivers/registry.js';
import { LEAN_MASKED_UNITS } from '../../src/guest/constants.js';
import { kernelCmdline, tscKhzFromCpuinfo } from '../../src/vms/cmdline.js';
import { seedFiles } from '../../src/vms/seed.js';
import { vmFiles } from '../../src/vms/files.js';
import { pinHostKey, renderSshConfig, sshPaths, unpinHostKey } from '../../src/vms/ssh.js';
import { installInclude, renderList } from '../../src/cli/commands/vm.js';
import { isBangerError } from '../../src/core/errors.js';
import type { HostProbe } from '../../src/core/host.js';
import type { DriverHost, ProbeResult, VmmDriver } from '../../src/vms/drivers/types.js';
import { exec } from '../../src/core/exec.js';

const files = vmFiles('/var/lib/banger/vms/box');
const spec: QemuLaunch = {
  id: '0123456789abcdef0123',
  instance: '0123456789ab',
  name: 'box',
  files,
  vcpu: 2,
  memoryMiB: 512,
  kernel: '/k/vmlinuz',
  initrd: '/k/initrd.img',
  cmdline: 'console=ttyS0 root=/dev/vda',
  disks: [
    { id: 'root', path: files.rootQcow2, format: 'qcow2' },
    { id: 'seed', path: files.seed, format: 'raw' },
  ],
  net: { tap: 'tap-0123456789', mac: '06:00:AC:10:00:02' },
  kernelFormat: 'bzImage',
  kvm: false,
  acpi: true,
  memory: { kind: 'ram' },
};

function after(argv: string[], flag: string): string[] {
  return argv.flatMap((a, i) => (a === flag ? [argv[i + 1]!] : []));
}

test('qemuArgv: microvm TCG, daemonized, serial/QMP/agent sockets in the VM dir, disks in order', () => {
  const argv = qemuArgv('qemu-system-x86_64', spec);
  assert.equal(after(argv, '-name')[0], 'banger:0123456789ab:box,process=banger-box', 'the process names its owning instance');
  assert.equal(argv[0], 'qemu-system-x86_64');
  assert.deepEqual(after(argv, '-M'), ['microvm,acpi=on,x-option-roms=off,rtc=on,memory-backend=mem']);
  assert.deepEqual(after(argv, '-accel'), ['tcg']);
  assert.ok(!argv.includes('-cpu'), 'TCG uses the default CPU model');
  for (const f of ['-no-reboot', '-nodefaults', '-no-user-config', '-daemonize']) assert.ok(argv.includes(f), f);
  assert.deepEqual(after(argv, '-initrd'), ['/k/initrd.img']);
  assert.deepEqual(after(argv, '-serial'), ['chardev:con']);
  assert.ok(after(argv, '-chardev').includes(`file,id=con,path=${files.console},append=on`), 'the console is appended to (copytruncate rotation)');
  assert.deepEqual(after(argv, '-qmp'), [`unix:${files.qmp},server=on,wait=off`]);
  assert.deepEqual(after(argv, '-pidfile'), [files.pid]);
  assert.deepEqual(
    after(argv, '-drive').map((d) => d.split(',')[0]),
    ['id=root', 'id=seed'],
  );
  assert.match(after(argv, '-drive')[0]!, /format=qcow2/);
  assert.ok(after(argv, '-chardev').includes(`socket,id=agent,path=${files.agent},server=on,wait=off`));
  assert.ok(after(argv, '-device').includes('virtserialport,chardev=agent,name=banger.agent'));
  assert.ok(after(argv, '-netdev').includes('tap,id=n0,ifname=tap-0123456789,script=no,downscript=no'));
  assert.ok(after(argv, '-device').includes('virtio-net-device,netdev=n0,mac=06:00:AC:10:00:02'));
});

test('qemuArgv: --disk-iops / --disk-bps throttle every -drive (QEMU block throttling); none without them', () => {
  assert.ok(after(qemuArgv('qemu', spec), '-drive').every((d) => !d.includes('throttling')));
  const both = after(qemuArgv('qemu', { ...spec, diskLimits: { iops: 50, bps: 1048576 } }), '-drive');
  assert.equal(both.length, 2);
  for (const d of both) assert.match(d, /,throttling\.iops-total=50,throttling\.bps-total=1048576$/);
  for (const d of after(qemuArgv('qemu', { ...spec, diskLimits: { iops: 7 } }), '-drive')) assert.match(d, /,throttling\.iops-total=7$/);
});

test('qemuArgv: KVM uses -accel kvm -cpu host; no initrd → acpi=off, no -initrd', () => {
  const argv = qemuArgv('qemu', { ...spec, kvm: true, acpi: false, initrd: undefined });
  assert.deepEqual(after(argv, '-accel'), ['kvm']);
  assert.deepEqual(after(argv, '-cpu'), ['host']);
  assert.deepEqual(after(argv, '-M'), ['microvm,acpi=off,x-option-roms=off,rtc=on,memory-backend=mem']);
  assert.ok(!argv.includes('-initrd'));
});

test('qopt escapes commas in paths', () => {
  assert.equal(qopt('/a,b/c'), '/a,,b/c');
  const argv = qemuArgv('qemu', { ...spec, files: vmFiles('/x,y'), disks: [{ id: 'root', path: '/x,y/root.qcow2', format: 'qcow2' }] });
  assert.ok(after(argv, '-drive')[0]!.includes('file=/x,,y/root.qcow2'));
});

test('kernelCmdline: contract string; init= only with first boot; tsc_early_khz and tsc=reliable under TCG', () => {
  const base = { ip: '172.16.0.2', gateway: '172.16.0.1', netmask: '255.255.255.0', hostname: 'box' };
  assert.equal(
    kernelCmdline({ ...base, firstBoot: true }),
    'console=ttyS0 reboot=t panic=-1 root=/dev/vda rw ip=172.16.0.2::172.16.0.1:255.255.255.0:box:eth0:off init=/usr/local/libexec/banger-first-boot systemd.mask=dev-ttyS0.device systemd.mask=dev-vdb.device systemd.mask=serial-getty@ttyS0.service',
  );
  assert.ok(!kernelCmdline({ ...base, firstBoot: false }).includes('init='));
  assert.match(kernelCmdline({ ...base, firstBoot: false, tscKhz: 2100000 }), / tsc_early_khz=2100000 tsc=reliable /);
  assert.doesNotMatch(kernelCmdline({ ...base, firstBoot: false }), /tsc=/, "KVM guests keep kvm-clock and the kernel's own TSC checks");
  assert.equal(tscKhzFromCpuinfo('processor : 0\ncpu MHz\t\t: 2096.014\n'), 2096014);
  assert.equal(tscKhzFromCpuinfo(undefined), 2000000);
});

test("kernelCmdline lean: the lean-boot units are masked, the rest of the line is unchanged, and the line fits the x86 kernel limit (2048 bytes) with room for Firecracker's device entries", () => {
  const base = {
    ip: '172.16.255.254',
    gateway: '172.16.0.1',
    netmask: '255.255.0.0',
    hostname: 'a-rather-long-vm-name-of-sixty-three-characters-xxxxxxxxxxxxxxx',
    firstBoot: true,
    tscKhz: 2100000,
    modulesDevice: '/dev/vdd',
  };
  const lean = kernelCmdline({ ...base, lean: true });
  const plain = kernelCmdline(base);
  for (const u of LEAN_MASKED_UNITS) assert.ok(lean.includes(` systemd.mask=${u}`), u);
  assert.ok(!plain.includes('systemd.mask=e2scrub_reap.service'));
  assert.ok(lean.startsWith(plain), 'lean only appends masks');
  for (const keep of ['systemd-journald.service', 'ssh.service', 'banger-vsock-agent.service', 'systemd-tmpfiles-setup.service', 'kmod-static-nodes.service'])
    assert.ok(!lean.includes(keep), `${keep} is kept`);
  assert.ok(lean.length + 4 * 60 < 2048, `${lean.length} bytes`);
});

test("seedFiles: a builder VM's seed carries `prepare`; other seeds do not", () => {
  const s = {
    name: 'prepare-0a1b2c3d',
    net: { ip: '172.16.0.2', prefix: 24, gateway: '172.16.0.1', dns: ['1.1.1.1'] },
    hostKey: 'K\n',
    hostKeyPub: 'ssh-ed25519 AAAA',
    authorizedKey: 'ssh-ed25519 BBBB',
  };
  assert.deepEqual(seedFiles({ ...s, prepare: true })['prepare'], ['1\n', 0o644]);
  assert.equal(seedFiles(s)['prepare'], undefined);
});

test('seedFiles: the seed contract (paths, modes, network.env)', () => {
  const f = seedFiles({
    name: 'box',
    net: { ip: '172.16.0.2', prefix: 24, gateway: '172.16.0.1', dns: ['1.1.1.1', '8.8.8.8'] },
    hostKey: 'PRIVATE\n',
    hostKeyPub: 'ssh-ed25519 AAAA root@box',
    authorizedKey: 'ssh-ed25519 BBBB banger',
  });
  assert.deepEqual(Object.keys(f).sort(), [
    'hostname',
    'network.env',
    'resolv.conf',
    'ssh/authorized_keys',
    'ssh/ssh_host_ed25519_key',
    'ssh/ssh_host_ed25519_key.pub',
    'version',
  ]);
  assert.equal(f['ssh/ssh_host_ed25519_key']![1], 0o600);
  assert.equal(f['version']![0], '1\n');
  assert.equal(f['hostname']![0], 'box\n');
  assert.equal(f['resolv.conf']![0], 'nameserver 1.1.1.1\nnameserver 8.8.8.8\n');
  assert.equal(
    f['network.env']![0],
    'BANGER_IP=172.16.0.2\nBANGER_PREFIX=24\nBANGER_GATEWAY=172.16.0.1\nBANGER_IFACE=eth0\nBANGER_DNS="1.1.1.1 8.8.8.8"\nBANGER_VM_NAME=box\n',
  );
  const grown = seedFiles({
    name: 'box',
    net: { ip: '172.16.0.2', prefix: 24, gateway: '172.16.0.1', dns: [] },
    hostKey: 'K\n',
    hostKeyPub: 'P',
    authorizedKey: 'A',
    growRoot: true,
  });
  assert.deepEqual(grown['grow-root'], ['1\n', 0o644], '--disk-size asks the guest to grow its root');
});

function host(o: { kvmRw: boolean; flags: string; bins: string[] }): HostProbe {
  return {
    which: async (c) => (o.bins.includes(c) ? `/usr/bin/${c}` : undefined),
    readFile: async (p) => (p === '/proc/cpuinfo' ? `flags\t: fpu ${o.flags}\n` : undefined),
    canReadWrite: async (p) => p === '/dev/kvm' && o.kvmRw,
  };
}
const bins = { qemu: 'qemu-system-x86_64', firecracker: 'firecracker' };
/**
 * A probe-only stand-in for a second driver preferred by `auto` (the real Firecracker driver
 * registers itself in its own folder): binary on PATH and usable KVM, in Firecracker's words.
 */
function fcStandIn(): VmmDriver {
  return {
    kind: 'firecracker',
    async probe(h: DriverHost): Promise<ProbeResult> {
      if (!(await h.probe.which(bins.firecracker)))
        return {
          usable: false,
          kvm: h.kvm.usable,
          reason: 'binary not found',
          error: `--vmm firecracker: binary '${bins.firecracker}' not found`,
          hint: 'install firecracker, or use --vmm qemu',
        };
      if (!h.kvm.usable)
        return { usable: false, kvm: false, reason: `KVM not usable: ${h.kvm.reason}`, error: `--vmm firecracker: KVM not usable: ${h.kvm.reason}` };
      return { usable: true, kvm: true, reason: 'kvm' };
    },
  } as Partial<VmmDriver> as VmmDriver;
}
const qemu = new QemuDriver(exec, { qemu: bins.qemu });
const selectVmm = (requested: 'auto' | 'qemu' | 'firecracker', h: HostProbe) => new DriverRegistry([fcStandIn(), qemu]).select(requested, h);

test('selectVmm auto explains its choice', async () => {
  const noFc = await selectVmm('auto', host({ kvmRw: true, flags: 'vmx', bins: ['qemu-system-x86_64'] }));
  assert.equal(noFc.kind, 'qemu');
  assert.equal(noFc.kvm, true);
  assert.match(noFc.reason, /^auto: firecracker: binary not found → qemu; accel kvm/);
  const noKvm = await selectVmm('auto', host({ kvmRw: true, flags: 'sse', bins: ['qemu-system-x86_64', 'firecracker'] }));
  assert.equal(noKvm.kvm, false);
  assert.match(noKvm.reason, /^auto: firecracker: KVM not usable: .*no vmx\/svm.* → qemu; accel tcg/);
});

test('selectVmm: explicit firecracker without binary / KVM is a clear E_VMM', async () => {
  await assert.rejects(
    selectVmm('firecracker', host({ kvmRw: false, flags: '', bins: ['qemu-system-x86_64'] })),
    (e) => isBangerError(e, 'E_VMM') && /binary 'firecracker' not found/.test(e.message),
  );
  await assert.rejects(
    selectVmm('firecracker', host({ kvmRw: false, flags: '', bins: ['qemu-system-x86_64', 'firecracker'] })),
    (e) => isBangerError(e, 'E_VMM') && /KVM not usable/.test(e.message),
  );
  await assert.rejects(selectVmm('qemu', host({ kvmRw: false, flags: '', bins: [] })), (e) => isBangerError(e, 'E_VMM') && /QEMU binary/.test(e.message));
});

test('known_hosts pinning replaces and removes exactly one VM', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'banger-kh-'));
  try {
    const p = sshPaths(dir);
    await pinHostKey(p, '172.16.0.2', 'a', 'ssh-ed25519 AAAA1 root@a');
    await pinHostKey(p, '172.16.0.3', 'b', 'ssh-ed25519 BBBB root@b');
    await pinHostKey(p, '172.16.0.2', 'a', 'ssh-ed25519 AAAA2 root@a');
    assert.equal(readFileSync(p.knownHosts, 'utf8'), '172.16.0.3,b,b.vm ssh-ed25519 BBBB\n172.16.0.2,a,a.vm ssh-ed25519 AAAA2\n');
    await unpinHostKey(p, '172.16.0.2', 'a');
    await unpinHostKey(p, '172.16.0.2', 'a');
    assert.equal(readFileSync(p.knownHosts, 'utf8'), '172.16.0.3,b,b.vm ssh-ed25519 BBBB\n');
    const cfg = renderSshConfig(p, [{ name: 'b', ip: '172.16.0.3' }]);
    assert.match(
      cfg,
      /Host b\.vm\n {2}HostName 172\.16\.0\.3\n {2}User root\n {2}IdentityFile .*id_ed25519\n {2}IdentityFile .*id_ed25519-group\n {2}IdentitiesOnly yes\n {2}UserKnownHostsFile .*known_hosts\n {2}StrictHostKeyChecking yes/,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('ssh-config --install prepends one Include, idempotently', async () => {
  const home = mkdtempSync(join(tmpdir(), 'banger-home-'));
  try {
    const f = await installInclude('/var/lib/banger/ssh/config', home);
    assert.equal(readFileSync(f, 'utf8'), 'Include /var/lib/banger/ssh/config\n');
    writeFileSync(f, 'Host other\n  User me\n');
    await installInclude('/var/lib/banger/ssh/config', home);
    await installInclude('/var/lib/banger/ssh/config', home);
    assert.equal(readFileSync(f, 'utf8'), 'Include /var/lib/banger/ssh/config\n\nHost other\n  User me\n');
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});

test('ssh-config --install keeps a symlinked ~/.ssh/config a symlink and writes through to its target', async () => {
  const home = mkdtempSync(join(tmpdir(), 'banger-home-'));
  try {
    mkdirSync(join(home, 'dotfiles'));
    mkdirSync(join(home, '.ssh'));
    writeFileSync(join(home, 'dotfiles', 'ssh_config'), 'Host other\n  User me\n', { mode: 0o640 });
    symlinkSync('../dotfiles/ssh_config', join(home, '.ssh', 'config'));
    const f = await installInclude('/var/lib/banger/ssh/config', home);
    assert.equal(f, join(home, 'dotfiles', 'ssh_config'));
    assert.ok(lstatSync(join(home, '.ssh', 'config')).isSymbolicLink(), 'still a symlink');
    assert.equal(readlinkSync(join(home, '.ssh', 'config')), '../dotfiles/ssh_config');
    assert.equal(readFileSync(join(home, 'dotfiles', 'ssh_config'), 'utf8'), 'Include /var/lib/banger/ssh/config\n\nHost other\n  User me\n');
    assert.equal(lstatSync(join(home, 'dotfiles', 'ssh_config')).mode & 0o777, 0o640, 'target keeps its mode');
    await installInclude('/var/lib/banger/ssh/config', home);
    assert.equal(readFileSync(join(home, '.ssh', 'config'), 'utf8').match(/Include/g)!.length, 1);
    // a dangling symlink: the target is created
    rmSync(join(home, 'dotfiles', 'ssh_config'));
    await installInclude('/var/lib/banger/ssh/config', home);
    assert.equal(readFileSync(join(home, 'dotfiles', 'ssh_config'), 'utf8'), 'Include /var/lib/banger/ssh/config\n');
    assert.ok(lstatSync(join(home, '.ssh', 'config')).isSymbolicLink());
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});

test('vm list table columns', () => {
  const out = renderList(
    [
      {
        name: 'box',
        running: true,
        state: 'running',
        vmm: 'qemu',
        image: 'deb',
        ip: '172.16.0.2',
        spec: { vcpu: 2, memoryMiB: 1024 },
        createdAt: new Date().toISOString(),
      },
      {
        name: 'web',
        running: true,
        state: 'running',
        vmm: 'qemu',
        image: 'deb',
        ip: '172.16.0.3',
        spec: {
          vcpu: 2,
          memoryMiB: 1024,
          ports: [
            { hostIp: '127.0.0.1', hostPort: 8080, guestPort: 80, proto: 'tcp' },
            { hostIp: '::1', hostPort: 8443, guestPort: 443, proto: 'tcp' },
          ],
        },
        createdAt: new Date().toISOString(),
        expiresAt: new Date(Date.parse('2030-01-01T00:00:00Z') + 552_000).toISOString(),
        onExpire: 'rm',
      },
    ],
    Date.parse('2030-01-01T00:00:00Z'),
  );
  const [head, row, row2] = out.split('\n');
  assert.deepEqual(head!.split(/\s+/), ['NAME', 'STATE', 'VMM', 'IMAGE', 'IP', 'VCPU', 'MEM', 'AGE', 'TTL', 'PORTS']);
  assert.deepEqual(row!.split(/\s+/).slice(0, 7), ['box', 'running', 'qemu', 'deb', '172.16.0.2', '2', '1024M']);
  assert.match(row!, /\s-\s+-$/, 'no lifetime, no ports: - -');
  assert.match(row2!, /\s9m12s rm\s+127/, 'time left and what happens then');
  assert.match(row!, /\s-$/, 'no ports: -');
  assert.match(row2!, /127\.0\.0\.1:8080->80\/tcp, \[::1\]:8443->443\/tcp$/);
});

test('launchSpec: bzImage preferred, initrd → ACPI on, disks in guest order, tsc only under TCG', async () => {
  const { launchSpec: common } = await import('../../src/vms/launch.js');
  const launchSpec = (o: Omit<Parameters<typeof common>[0], 'driver'>) => qemuLaunch(common({ ...o, driver: qemu }));
  const { parseSubnet } = await import('../../src/network/subnet.js');
  const f = vmFiles('/r/vms/box');
  const vm = {
    name: 'box',
    id: '0123456789abcdef0123',
    image: 'img',
    kernel: 'k',
    desiredState: 'running' as const,
    state: 'created' as const,
    vmm: 'qemu' as const,
    vmmReason: '',
    pid: null,
    tap: 'tap-0123456789',
    mac: null,
    ip: '172.16.0.2',
    createdAt: '',
    startedAt: null,
    createDone: true,
    spec: { vcpu: 2, memoryMiB: 512, nat: false, firstBoot: true, workDiskBytes: 1 << 20, rootDisk: { path: f.rootQcow2, format: 'qcow2' as const } },
  };
  const net = {
    ip: '172.16.0.2',
    prefix: 24,
    netmask: '255.255.255.0',
    gateway: '172.16.0.1',
    bridge: 'banger0',
    tap: 'tap-0123456789',
    mac: '06:00:AC:10:00:02',
    dns: [],
  };
  const s = launchSpec({
    instance: '0123456789ab',
    vm,
    kernel: { name: 'k', dir: '/k', vmlinux: '/k/vmlinux', vmlinuz: '/k/vmlinuz', initrd: '/k/initrd.img' },
    files: f,
    net,
    subnet: parseSubnet('172.16.0.0/24'),
    kvm: false,
    tscKhz: 2000000,
  });
  assert.equal(s.kernel, '/k/vmlinuz');
  assert.equal(s.acpi, true);
  assert.deepEqual(
    s.disks.map((d) => `${d.id}:${d.format}`),
    ['root:qcow2', 'seed:raw', 'work:raw'],
  );
  assert.match(s.cmdline, /init=\/usr\/local\/libexec\/banger-first-boot .*tsc_early_khz=2000000/);
  const k = launchSpec({
    instance: '0123456789ab',
    vm: { ...vm, spec: { ...vm.spec, workDiskBytes: undefined } },
    kernel: { name: 'k', dir: '/k', vmlinux: '/k/vmlinux' },
    files: f,
    net,
    subnet: parseSubnet('172.16.0.0/24'),
    kvm: true,
    tscKhz: 2000000,
  });
  assert.equal(k.kernel, '/k/vmlinux');
  assert.equal(k.acpi, false);
  assert.equal(k.initrd, undefined);
  assert.equal(k.disks.length, 2);
  assert.doesNotMatch(k.cmdline, /tsc_early_khz|tsc=reliable/);
  assert.doesNotMatch(k.cmdline, /banger\.modules/);
  // A kernel with a modules disk: attached read-only after the work disk and named on the command line.
  const m = launchSpec({
    instance: '0123456789ab',
    vm,
    kernel: { name: 'k', dir: '/k', vmlinuz: '/k/vmlinuz', initrd: '/k/initrd.img', modulesImage: '/k/modules.ext4' },
    files: f,
    net,
    subnet: parseSubnet('172.16.0.0/24'),
    kvm: false,
    tscKhz: 2000000,
  });
  assert.deepEqual(
    m.disks.map((d) => `${d.id}:${d.readOnly ? 'ro' : 'rw'}`),
    ['root:rw', 'seed:rw', 'work:rw', 'modules:ro'],
  );
  assert.match(m.cmdline, / banger\.modules=\/dev\/vdd /);
  const argv = qemuArgv('qemu-system-x86_64', qemuLaunch(m));
  assert.ok(argv.includes('id=modules,file=/k/modules.ext4,format=raw,if=none,readonly=on'), argv.join(' '));
  const noWork = launchSpec({
    instance: '0123456789ab',
    vm: { ...vm, spec: { ...vm.spec, workDiskBytes: undefined } },
    kernel: { name: 'k', dir: '/k', vmlinuz: '/k/vmlinuz', modulesImage: '/k/modules.ext4' },
    files: f,
    net,
    subnet: parseSubnet('172.16.0.0/24'),
    kvm: false,
  });
  assert.match(noWork.cmdline, / banger\.modules=\/dev\/vdc /);
});
