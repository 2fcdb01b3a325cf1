import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exec } from '../../src/core/exec.js';
import { nullLogger } from '../../src/core/log.js';
import { injectGuestFiles } from '../../src/guest/inject.js';
import { debianMirrorUnavailable, startDebianMirror, fetchTestKernel } from '../helpers/debian-mirror.js';
import { createTestNet, type TestNet } from '../helpers/debian-boot.js';
import {
  agentRequest,
  bootGuest,
  buildSeed,
  copyTree,
  debianSystemdTree,
  debootstrapUnavailable,
  mkfsFromDir,
  guestSsh as ssh,
  until,
  type GuestVm,
} from '../helpers/guest-fixtures.js';
import { isRoot, missingTools } from '../helpers/daemon.js';

/**
 * banger's guest side in a real guest: a debootstrap'd Debian bookworm (systemd +
 * openssh-server, as the VM issue's e2e image) with injectGuestFiles applied, booted under
 * QEMU microvm (TCG) with the Debian cloud kernel + banger initramfs, the VM service's kernel
 * command line (init=banger-first-boot, the unit masks), a seed disk on /dev/vdb and the agent's
 * virtio-serial port on a host Unix socket. The guest's tap lives in a namespace this test
 * creates; SSH runs inside it with the pinned host key only.
 */
const skip = !isRoot()
  ? 'needs root (network namespace, tap, debootstrap)'
  : (missingTools('qemu-system-x86_64', 'mkfs.ext4', 'ip', 'ssh', 'ssh-keygen', 'dpkg-deb') ??
    (!existsSync('/dev/net/tun') ? 'no /dev/net/tun' : (debianMirrorUnavailable() ?? debootstrapUnavailable())));

const NAME = 'guestbox';
const BOOT_TIMEOUT_MS = 300_000; // a loaded 2-core runner boots systemd under TCG in 30-90 s

let dir: string;
let kernelDir: string;
let rootImg: string;

before(
  async () => {
    if (skip) return;
    dir = mkdtempSync(join(tmpdir(), 'banger-guestboot-'));
    const mirror = await startDebianMirror();
    try {
      kernelDir = await fetchTestKernel(dir, mirror);
    } finally {
      await mirror.close();
    }
    const tree = join(dir, 'rootfs');
    copyTree(await debianSystemdTree(), tree);
    await injectGuestFiles(tree, { exec, log: nullLogger });
    rootImg = join(dir, 'root.ext4');
    mkfsFromDir(tree, rootImg, '2G');
    rmSync(tree, { recursive: true, force: true });
  },
  { timeout: 900_000 },
);

after(
  () => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  },
  { timeout: 120_000 },
);

test('a Debian guest boots through banger-first-boot: pinned SSH, systemd running, agent active and answering', { skip, timeout: 900_000 }, async () => {
  let net: TestNet | undefined;
  let vm: GuestVm | undefined;
  try {
    net = createTestNet('gst');
    const seed = buildSeed(join(dir, 'seed-run'), { name: NAME, ip: net.guestIp, prefix: 24, gateway: net.hostIp, dns: net.hostIp });
    vm = await bootGuest({ dir, kernelDir, rootImg, seedImg: seed.img, net, name: NAME });

    // the reference session's command, with only the seed's host key trusted
    const ref = await until('SSH with the pinned host key', vm, BOOT_TIMEOUT_MS, () => {
      const r = ssh(net!, seed.keys, seed.keys.knownHosts, 'id; uname -r; systemctl is-active banger-vsock-agent; hostname');
      return r.code === 0 ? r.stdout : undefined;
    });
    const lines = ref.trim().split('\n');
    assert.match(lines[0]!, /^uid=0\(root\)/);
    assert.match(lines[1]!, /cloud-amd64$/);
    assert.equal(lines[2], 'active', `agent unit: ${ref}`);
    assert.equal(lines[3], NAME);

    const state = ssh(net, seed.keys, seed.keys.knownHosts, 'systemctl is-system-running --wait; systemctl --failed --no-legend --plain');
    assert.equal(state.stdout.trim(), 'running', `system state and failed units:\n${state.stdout}${state.stderr}`);

    // the seed was applied: files, modes, sshd policy; the masks are in effect
    const facts = ssh(
      net,
      seed.keys,
      seed.keys.knownHosts,
      'stat -c "%a %n" /root/.ssh /root/.ssh/authorized_keys /etc/ssh/ssh_host_ed25519_key; cat /etc/resolv.conf; grep "# banger" /etc/hosts; ' +
        'sshd -T | grep -E "^(permitrootlogin|passwordauthentication|hostkey) "; systemctl is-enabled dev-ttyS0.device serial-getty@ttyS0.service systemd-firstboot.service; ' +
        'test -f /var/lib/banger/first-boot.done && echo marker',
    );
    assert.equal(facts.code, 0, facts.stderr);
    for (const want of [
      '700 /root/.ssh',
      '600 /root/.ssh/authorized_keys',
      '600 /etc/ssh/ssh_host_ed25519_key',
      `nameserver ${net.hostIp}`,
      `${net.guestIp} ${NAME} # banger`,
      'permitrootlogin without-password',
      'passwordauthentication no',
      'hostkey /etc/ssh/ssh_host_ed25519_key',
      'marker',
    ])
      assert.ok(facts.stdout.split('\n').includes(want), `"${want}" in:\n${facts.stdout}`);
    // masked in /etc by the injection (and at runtime by systemd.mask= on the command line)
    assert.equal(facts.stdout.split('\n').filter((l) => /^masked(-runtime)?$/.test(l)).length, 3, facts.stdout);

    // a different host key for the same address is refused (no trust on first use)
    const wrong = ssh(net, seed.keys, seed.keys.wrongKnownHosts, 'true');
    assert.equal(wrong.code, 255);
    assert.match(wrong.stderr, /REMOTE HOST IDENTIFICATION HAS CHANGED|Host key verification failed/);

    // the agent over the virtio-serial port (found through sysfs: minbase has no udev)
    const health = await until('agent health over virtio-serial', vm, 60_000, () => agentRequest(vm!.agentSock, '{"op":"health"}'));
    assert.equal(health.ok, true);
    assert.equal(health.agent, 'banger-vsock-agent');
    assert.equal(health.version, '3'); // agent 3 (set-clock) speaking protocol v2 (v1 requests are still answered)
    assert.equal(health.hostname, NAME);
    const ports = await agentRequest(vm.agentSock, '{"op":"ports"}');
    assert.ok(
      ports?.ports?.some((p: any) => p.proto === 'tcp' && p.port === 22),
      `sshd listening in ${JSON.stringify(ports)}`,
    );
    assert.deepEqual(await agentRequest(vm.agentSock, '{"op":"shutdown"}'), { ok: false, error: 'unknown op' });
    // and again after the bad request: the agent keeps serving (the virtio-serial port is
    // reopened by the agent after each host-side disconnect, which a loaded TCG guest can take
    // seconds to notice: wait for the answer rather than give one try)
    const again = await until('agent health after a bad request', vm, 60_000, () => agentRequest(vm!.agentSock, '{"op":"health"}'));
    assert.equal(again.ok, true);

    const text = vm.console();
    for (const s of ['mount-basics', 'seed', 'configure', 'exec-init']) assert.match(text, new RegExp(`banger-first-boot: step ${s}`));
    assert.doesNotMatch(text, /banger-first-boot: error/);
    assert.doesNotMatch(text, /banger-first-boot: step install/, 'systemd was already in the image: nothing installed');
  } finally {
    await vm?.kill();
    net?.destroy();
  }
});
