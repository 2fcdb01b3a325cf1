import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { realHost, kvmUsable } from '../../src/doctor/checks.js';
import { which } from '../../src/core/exec.js';
import { isRoot, missingTools, TestDaemon } from '../helpers/daemon.js';
import { TestRegistry } from '../helpers/registry.js';
import { cleanupAll, createNetns, exposeInNetns } from '../helpers/netns.js';

/**
 * A REAL Firecracker VM end to end through bin/banger: runs only where /dev/kvm is usable and a
 * Firecracker binary exists (BANGER_TEST_FIRECRACKER, else `firecracker` on PATH), with an ELF
 * vmlinux that boots on it (BANGER_TEST_FC_VMLINUX: the generic kernel of
 * scripts/make-generic-kernel.sh). On our CI (no KVM, no binary) it skips with the
 * strict-mode allow-listed reasons. Image: a debootstrap Debian from a local registry.
 */
const kvm = await kvmUsable(realHost);
const fcBin = process.env.BANGER_TEST_FIRECRACKER ?? (await which('firecracker'));
const vmlinux = process.env.BANGER_TEST_FC_VMLINUX;
const skip = !kvm.usable
  ? `needs usable KVM (${kvm.reason})`
  : !fcBin
    ? 'needs a Firecracker binary (set BANGER_TEST_FIRECRACKER or put firecracker on PATH)'
    : !vmlinux || !existsSync(vmlinux)
      ? 'needs BANGER_TEST_FC_VMLINUX: a generic vmlinux (scripts/make-generic-kernel.sh); not an allow-listed skip, so a KVM host with Firecracker must provide it'
      : !isRoot()
        ? 'needs root'
        : missingTools('ip', 'nft', 'ssh', 'ssh-keygen', 'mkfs.ext4', 'debugfs', 'skopeo', 'debootstrap', 'docker-registry');

let d: TestDaemon | undefined;
let registry: TestRegistry | undefined;

before(
  async () => {
    if (skip) return;
    const { ensureDebianImageInRegistry } = await import('../helpers/debootstrap.js');
    registry = await TestRegistry.start();
    const ref = await ensureDebianImageInRegistry(registry.host);
    const ns = createNetns('fcreal');
    const stop = await exposeInNetns(ns, registry.port);
    d = new TestDaemon({
      netns: ns,
      config: { binaries: { firecracker: fcBin }, vm: { sshTimeoutSeconds: 120, stopTimeoutSeconds: 30, vcpu: 2, memoryMiB: 512 } },
    });
    await d.start();
    const k = await d.cli(['kernel', 'import', 'fc-generic', '--vmlinux', vmlinux!, '--distro', 'generic'], { timeoutMs: 120_000 });
    assert.equal(k.code, 0, k.stderr);
    const i = await d.cli(['image', 'pull', ref, '--name', 'debian-bookworm', '--kernel-ref', 'fc-generic'], { timeoutMs: 300_000 });
    assert.equal(i.code, 0, i.stderr);
    stop();
  },
  { timeout: 900_000 },
);

after(
  async () => {
    await d?.cleanup();
    cleanupAll();
    await registry?.stop();
  },
  { timeout: 120_000 },
);

test('real Firecracker: auto picks it, SSH answers, the agent lists sshd over vsock, stop by Ctrl-Alt-Del, rm', { skip, timeout: 600_000 }, async () => {
  const created = await d!.json(['vm', 'create', '--image', 'debian-bookworm', '--name', 'fcreal'], { timeoutMs: 300_000 });
  assert.equal(created.vmm, 'firecracker');
  assert.match(created.vmmReason, /^auto: firecracker; v\d+\.\d+\.\d+, accel kvm/);
  const ssh = await d!.cli(['vm', 'ssh', 'fcreal', '--', 'uname -r; systemctl is-active banger-vsock-agent'], { timeoutMs: 120_000 });
  assert.equal(ssh.code, 0, ssh.stderr);
  assert.match(ssh.stdout, /active/);
  const ports = await d!.json(['vm', 'ports', 'fcreal']);
  assert.ok(
    ports.ports.some((p: { port: number }) => p.port === 22),
    JSON.stringify(ports),
  );
  const stop = await d!.cli(['--json', 'vm', 'stop', 'fcreal'], { timeoutMs: 120_000 });
  assert.equal(stop.code, 0, stop.stderr);
  // Ctrl-Alt-Del (reboot=k) ended the guest: the daemon never had to SIGKILL Firecracker.
  assert.deepEqual(
    JSON.parse(stop.stdout).map((v: { name: string; forced: boolean }) => [v.name, v.forced]),
    [['fcreal', false]],
    'stopped by Ctrl-Alt-Del, not a kill',
  );
  assert.equal((await d!.cli(['vm', 'rm', 'fcreal'])).code, 0);
});
