import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exec, type Exec } from '../../src/core/exec.js';
import { isBangerError } from '../../src/core/errors.js';
import type { HostProbe } from '../../src/core/host.js';
import { agentRequest } from '../../src/vms/agent.js';
import { FirecrackerDriver } from '../../src/vms/drivers/firecracker/index.js';
import { QemuDriver } from '../../src/vms/drivers/qemu/index.js';
import { DRIVERS, DriverRegistry } from '../../src/vms/drivers/registry.js';
import type { DriverHost, ProbeResult, VmmDriver } from '../../src/vms/drivers/types.js';
import { connectUnixStream } from '../../src/vms/drivers/unix-stream.js';
import { vmFiles } from '../../src/vms/files.js';

/** A host with QEMU on PATH and (kvm) a read-write /dev/kvm plus vmx. */
function host(o: { kvm: boolean; bins: string[] }): HostProbe {
  return {
    which: async (c) => (o.bins.includes(c) ? `/usr/bin/${c}` : undefined),
    readFile: async (p) => (p === '/proc/cpuinfo' ? `flags\t: fpu ${o.kvm ? 'vmx' : 'sse'}\n` : undefined),
    canReadWrite: async (p) => p === '/dev/kvm' && o.kvm,
  };
}
const qemu = () => new QemuDriver(exec, { qemu: 'qemu-system-x86_64' });

/** A probe-only driver of `kind` that answers `r` (its other methods are never called here). */
function probeOnly(kind: 'qemu' | 'firecracker', r: (h: DriverHost) => ProbeResult): VmmDriver {
  return { kind, probe: async (h: DriverHost) => r(h) } as Partial<VmmDriver> as VmmDriver;
}

test('registry: the build registers firecracker then qemu; an unregistered kind is E_VMM naming what is registered', async () => {
  assert.deepEqual(
    DRIVERS.map((d) => d.kind),
    ['firecracker', 'qemu'],
  );
  const reg = DriverRegistry.fromBuild({ exec, binaries: { qemu: 'qemu-system-x86_64', firecracker: 'firecracker' } });
  assert.deepEqual(reg.kinds(), ['firecracker', 'qemu']);
  assert.ok(reg.get('qemu') instanceof QemuDriver);
  assert.ok(reg.get('firecracker') instanceof FirecrackerDriver);
  const onlyQemu = new DriverRegistry([qemu()]);
  await assert.rejects(
    onlyQemu.select('firecracker', host({ kvm: true, bins: ['qemu-system-x86_64', 'firecracker'] })),
    (e) =>
      isBangerError(e, 'E_VMM') && /no 'firecracker' driver is registered in this build \(registered: qemu\)/.test(e.message) && e.hint === 'use --vmm qemu',
  );
  assert.throws(
    () => reg.get('bhyve'),
    (e) => isBangerError(e, 'E_VMM') && /'bhyve'/.test(e.message),
  );
  assert.throws(
    () => new DriverRegistry([qemu(), qemu()]),
    (e) => isBangerError(e, 'E_INTERNAL'),
  );
});

test('registry + firecracker probe: auto takes it only with KVM and the binary; --vmm firecracker runs the binary without KVM; < 1.5 refused', async () => {
  let version = 'Firecracker v1.16.1\n';
  const fakeExec: Exec = async (argv) => {
    assert.deepEqual(argv, ['/usr/bin/firecracker', '--version']);
    return { command: argv, exitCode: 0, stdout: version, stdoutBuffer: Buffer.from(version), stderr: '' };
  };
  const reg = DriverRegistry.fromBuild({ exec: fakeExec, binaries: { qemu: 'qemu-system-x86_64', firecracker: 'firecracker' } });
  const noBin = await reg.select('auto', host({ kvm: true, bins: ['qemu-system-x86_64'] }));
  assert.deepEqual([noBin.kind, noBin.reason], ['qemu', 'auto: firecracker: binary not found → qemu; accel kvm']);
  const noKvm = await reg.select('auto', host({ kvm: false, bins: ['qemu-system-x86_64', 'firecracker'] }));
  assert.equal(noKvm.kind, 'qemu');
  assert.match(noKvm.reason, /^auto: firecracker: KVM not usable: .* → qemu; accel tcg/);
  const both = await reg.select('auto', host({ kvm: true, bins: ['qemu-system-x86_64', 'firecracker'] }));
  assert.deepEqual([both.kind, both.kvm, both.reason], ['firecracker', true, 'auto: firecracker; v1.16.1, accel kvm']);
  const explicit = await reg.select('firecracker', host({ kvm: false, bins: ['firecracker'] }));
  assert.equal(explicit.kind, 'firecracker');
  assert.match(explicit.reason, /^requested firecracker; KVM not usable/);
  await assert.rejects(
    reg.select('firecracker', host({ kvm: true, bins: ['qemu-system-x86_64'] })),
    (e) => isBangerError(e, 'E_VMM') && e.message === "--vmm firecracker: binary 'firecracker' not found",
  );
  version = 'Firecracker v1.4.1\n';
  await assert.rejects(
    reg.select('firecracker', host({ kvm: true, bins: ['firecracker'] })),
    (e) => isBangerError(e, 'E_VMM') && /v1\.4\.1; banger needs Firecracker 1\.5 or newer/.test(e.message),
  );
  const old = await reg.select('auto', host({ kvm: true, bins: ['qemu-system-x86_64', 'firecracker'] }));
  assert.deepEqual([old.kind, old.reason], ['qemu', 'auto: firecracker: v1.4.1 is older than 1.5 → qemu; accel kvm']);
});

test('registry auto: only qemu registered → its reason alone; KVM verdict passed to the probe', async () => {
  const reg = new DriverRegistry([qemu()]);
  const tcg = await reg.select('auto', host({ kvm: false, bins: ['qemu-system-x86_64'] }));
  assert.deepEqual([tcg.kind, tcg.kvm], ['qemu', false]);
  assert.match(tcg.reason, /^auto: qemu; accel tcg \(KVM not usable: \/dev\/kvm is missing/);
  const kvm = await reg.select('auto', host({ kvm: true, bins: ['qemu-system-x86_64'] }));
  assert.deepEqual([kvm.kind, kvm.kvm, kvm.reason], ['qemu', true, 'auto: qemu; accel kvm']);
  const asked = await reg.select('qemu', host({ kvm: true, bins: ['qemu-system-x86_64'] }));
  assert.equal(asked.reason, 'requested qemu; accel kvm');
});

test('registry auto: order is preference; each passed-over driver says why; none usable is E_VMM', async () => {
  const no = (why: string) => probeOnly('firecracker', () => ({ usable: false, kvm: false, reason: why, hint: 'do X' }));
  const yes = probeOnly('firecracker', (h) => ({ usable: true, kvm: h.kvm.usable, reason: 'kvm' }));
  const h = host({ kvm: true, bins: ['qemu-system-x86_64'] });
  assert.equal((await new DriverRegistry([yes, qemu()]).select('auto', h)).kind, 'firecracker', 'first usable wins');
  assert.equal((await new DriverRegistry([qemu(), yes]).select('auto', h)).kind, 'qemu', 'registration order is the preference');
  assert.equal((await new DriverRegistry([no('thing missing'), qemu()]).select('auto', h)).reason, 'auto: firecracker: thing missing → qemu; accel kvm');
  const none = new DriverRegistry([no('thing missing'), qemu()]);
  await assert.rejects(
    none.select('auto', host({ kvm: true, bins: [] })),
    (e) => isBangerError(e, 'E_VMM') && e.message === 'no usable VMM: firecracker: thing missing; qemu: binary not found' && e.hint === 'do X',
  );
  // Explicit request of an unusable driver: its own error sentence, else "--vmm KIND: reason".
  await assert.rejects(none.select('firecracker', h), (e) => isBangerError(e, 'E_VMM') && e.message === '--vmm firecracker: thing missing');
});

test('qemu driver: boots the bzImage when present, else vmlinux; neither is E_NOT_FOUND naming the kernel', () => {
  const d = qemu();
  assert.deepEqual(d.bootKernel({ name: 'k', dir: '/k', vmlinuz: '/k/vmlinuz', vmlinux: '/k/vmlinux' }), { format: 'bzImage', path: '/k/vmlinuz' });
  assert.deepEqual(d.bootKernel({ name: 'k', dir: '/k', vmlinux: '/k/vmlinux' }), { format: 'elf-vmlinux', path: '/k/vmlinux' });
  assert.throws(
    () => d.bootKernel({ name: 'k9', dir: '/k', initrd: '/k/initrd.img' }),
    (e) => isBangerError(e, 'E_NOT_FOUND') && /kernel 'k9' has neither vmlinuz nor vmlinux/.test(e.message),
  );
  const vm = { id: 'i', name: 'box', files: vmFiles('/r/vms/box') };
  assert.deepEqual(d.rootDisk(vm), { path: '/r/vms/box/root.qcow2', format: 'qcow2' });
  assert.equal(d.consolePath(vm), '/r/vms/box/console.log');
});

test('qemu driver: ownerOf recognises its own processes by -name, nothing else', () => {
  const d = qemu();
  assert.deepEqual(d.ownerOf(['qemu-system-x86_64', '-name', 'banger:0123456789ab:box,process=banger-box', '-M', 'microvm']), {
    instance: '0123456789ab',
    vm: 'box',
  });
  assert.equal(d.ownerOf(['qemu-system-x86_64', '-name', 'other:0123456789ab:box']), undefined);
  assert.equal(d.ownerOf(['node', '-e', 'banger:0123456789ab:box']), undefined);
  assert.equal(d.ownerOf(['qemu-system-x86_64', '-name']), undefined);
});

function listen(path: string, onLine: (line: string, reply: (s: string) => void) => void): Promise<Server> {
  const srv = createServer((c) => {
    let buf = '';
    c.on('data', (d) => {
      buf += d.toString();
      const i = buf.indexOf('\n');
      if (i >= 0) onLine(buf.slice(0, i), (s) => c.write(s));
    });
    c.on('error', () => undefined);
  });
  return new Promise((r) => srv.listen(path, () => r(srv)));
}

test('qemu openAgentStream: waits for agent.sock to appear, then carries the agent protocol', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'banger-drv-'));
  const files = vmFiles(dir);
  const vm = { id: 'i', name: 'box', files };
  let srv: Server | undefined;
  try {
    // The socket appears 300 ms after the call (a VMM still starting): the stream waits for it.
    setTimeout(
      () =>
        void listen(files.agent, (l, reply) => reply(l === '{"op":"health"}' ? 'noise\n{"ok":true,"version":"t"}\n' : '{"ok":false}\n')).then((s) => (srv = s)),
      300,
    );
    const sock = await qemu().openAgentStream(vm, { timeoutMs: 5000 });
    assert.equal(sock.remotePort, undefined);
    // The stream carries the agent's bytes both ways (protocol v2 over it: integration/guest-agent-v2).
    const reply = await new Promise<string>((resolve) => {
      let b = '';
      sock.on('data', (d) => (b += d).includes('}\n') && resolve(b));
      sock.write('{"op":"health"}\n');
    });
    assert.equal(reply, 'noise\n{"ok":true,"version":"t"}\n');
    sock.destroy();
    // A peer that does not speak protocol v2 (a version 1 agent): agentRequest gives up, undefined.
    assert.equal(await agentRequest(qemu(), vm, 'health', 1000), undefined);
  } finally {
    srv?.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('connectUnixStream: E_TIMEOUT when nothing listens, E_CANCELLED on abort, E_VMM at once on a permanent error', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'banger-drv-'));
  try {
    const t0 = Date.now();
    await assert.rejects(connectUnixStream(join(dir, 'none.sock'), { timeoutMs: 400 }), (e) => isBangerError(e, 'E_TIMEOUT'));
    assert.ok(Date.now() - t0 >= 350, 'kept retrying until the deadline');
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 100);
    await assert.rejects(connectUnixStream(join(dir, 'none.sock'), { timeoutMs: 5000, signal: ac.signal }), (e) => isBangerError(e, 'E_CANCELLED'));
    writeFileSync(join(dir, 'file'), '');
    await assert.rejects(connectUnixStream(join(dir, 'file', 'x.sock'), { timeoutMs: 5000 }), (e) => isBangerError(e, 'E_VMM') && /ENOTDIR/.test(e.message));
    // An image without the agent: agentRequest resolves undefined, never throws.
    assert.equal(await agentRequest(qemu(), { id: 'i', name: 'x', files: vmFiles(dir) }, 'health', 300), undefined);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('driver features: every registered driver declares them, folders exactly with features.mounts; nothing outside drivers/ asks a VMM its name', async () => {
  const { readdirSync, readFileSync } = await import('node:fs');
  const drivers = DriverRegistry.fromBuild({ exec, binaries: { qemu: 'qemu-system-x86_64', firecracker: 'firecracker' } }).all();
  assert.deepEqual(drivers.map((d) => d.kind).sort(), DRIVERS.map((r) => r.kind).sort());
  for (const d of drivers) {
    assert.deepEqual(Object.keys(d.features).sort(), ['mounts', 'ownCgroup', 'snapshots', 'vsock'], d.kind);
    assert.equal(d.features.mounts, !!d.folders, `${d.kind}: features.mounts says whether it has folders`);
    assert.equal(d.features.snapshots, !!d.snapshots, `${d.kind}: features.snapshots says whether it has snapshots`);
  }
  assert.deepEqual(Object.fromEntries(drivers.map((d) => [d.kind, d.features.mounts])), { qemu: true, firecracker: false });
  // A comparison with a VMM's name ('qemu' === …, … !== 'firecracker') belongs in its driver.
  const kinds = DRIVERS.map((r) => r.kind).join('|');
  const named = new RegExp(`[!=]==\\s*['"](${kinds})['"]|['"](${kinds})['"]\\s*[!=]==`);
  const offenders: string[] = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) {
        if (p !== join('src', 'vms', 'drivers')) walk(p);
      } else if (p.endsWith('.ts')) {
        readFileSync(p, 'utf8')
          .split('\n')
          .forEach((line, i) => named.test(line) && offenders.push(`${p}:${i + 1}: ${line.trim()}`));
      }
    }
  };
  walk('src');
  assert.deepEqual(offenders, []);
});
