import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exec } from '../../src/core/exec.js';
import { nullLogger } from '../../src/core/log.js';
import { injectGuestFiles } from '../../src/guest/inject.js';
import { AgentConnection } from '../../src/vms/agent-session.js';
import { connectUnix } from '../../src/vms/agent.js';
import { applyIdentity, type GuestIdentity } from '../../src/vms/identity.js';
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
/** The guest the first test booted, kept for the identity test (one boot for the file). */
let booted: { net: TestNet; vm: GuestVm; seed: ReturnType<typeof buildSeed> } | undefined;

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
  async () => {
    await booted?.vm.kill();
    booted?.net.destroy();
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
    assert.equal(health.version, '4'); // agent 4 (identity) speaking protocol v2 (v1 requests are still answered)
    assert.equal(health.hostname, NAME);
    // Each probe is a new connection: the agent reopens the virtio-serial port after the last
    // one closed, which a loaded TCG guest can take seconds to notice (wait, do not give one try).
    const ports = await until('agent ports', vm, 60_000, () => agentRequest(vm!.agentSock, '{"op":"ports"}'));
    assert.ok(
      ports?.ports?.some((p: any) => p.proto === 'tcp' && p.port === 22),
      `sshd listening in ${JSON.stringify(ports)}`,
    );
    assert.deepEqual(await until('agent answer to an unknown op', vm, 60_000, () => agentRequest(vm!.agentSock, '{"op":"shutdown"}')), {
      ok: false,
      error: 'unknown op',
    });
    // and again after the bad request: the agent keeps serving (the virtio-serial port is
    // reopened by the agent after each host-side disconnect, which a loaded TCG guest can take
    // seconds to notice: wait for the answer rather than give one try)
    const again = await until('agent health after a bad request', vm, 60_000, () => agentRequest(vm!.agentSock, '{"op":"health"}'));
    assert.equal(again.ok, true);

    const text = vm.console();
    for (const s of ['mount-basics', 'seed', 'configure', 'exec-init']) assert.match(text, new RegExp(`banger-first-boot: step ${s}`));
    assert.doesNotMatch(text, /banger-first-boot: error/);
    assert.doesNotMatch(text, /banger-first-boot: step install/, 'systemd was already in the image: nothing installed');
    booted = { net, vm, seed }; // handed to the identity test; after() stops it
  } finally {
    if (!booted) {
      await vm?.kill();
      net?.destroy();
    }
  }
});

/** The inode of sshd's IPv4 listening socket on port 22 (/proc/net/tcp: state 0A, local port 0016). */
const LISTENER_INODE = `awk '$4 == "0A" && $2 ~ /:0016$/ { print $10; exit }' /proc/net/tcp`;

/** Runs `sh -c cmd` in the guest through the agent; its stdout and stderr. */
function guestSh(conn: AgentConnection, cmd: string): Promise<string> {
  let text = '';
  return new Promise((resolve, reject) => {
    conn
      .start(
        { op: 'exec', argv: ['sh', '-c', cmd] },
        {
          onStdout: (b) => (text += b.toString()),
          onStderr: (b) => (text += b.toString()),
          onExit: () => resolve(text),
          onError: reject,
        },
      )
      .then((s) => {
        s.consumed(1 << 20);
        s.eof();
      }, reject);
  });
}

test('identity after restore (agent 4): a new MAC (announced by gratuitous ARP), IP, hostname, machine-id, clock and SSH host key, applied through the agent', {
  skip,
  timeout: 300_000,
}, async () => {
  assert.ok(booted, 'the boot test did not leave a running guest (see its failure)');
  const { net, vm, seed } = booted;
  const nsRun = (argv: string[]) => spawnSync('ip', ['netns', 'exec', net.ns, ...argv], { encoding: 'utf8' });
  const before = ssh(net, seed.keys, seed.keys.knownHosts, `cat /etc/machine-id; ${LISTENER_INODE}`);
  assert.equal(before.code, 0, before.stderr);
  const [oldMachineId, listenerBefore] = before.stdout.trim().split('\n');
  assert.match(String(listenerBefore), /^\d+$/, before.stdout);

  // The new identity, in the test's subnet: .3 instead of .2, a fresh key pair and machine-id.
  const newIp = net.guestIp.replace(/\.2$/, '.3');
  const mac = `02:${[...randomBytes(5)].map((b) => b.toString(16).padStart(2, '0')).join(':')}`;
  const keyDir = join(dir, 'newkey');
  mkdirSync(keyDir, { recursive: true });
  const keyFile = join(keyDir, 'ssh_host_ed25519_key');
  assert.equal(spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'guestbox-2-host', '-f', keyFile]).status, 0);
  const id: GuestIdentity = {
    mac,
    ip: newIp,
    prefixLen: 24,
    gateway: net.hostIp,
    hostname: 'guestbox-2',
    machineId: randomBytes(16).toString('hex'),
    hostKey: { privatePem: readFileSync(keyFile, 'utf8'), publicLine: readFileSync(`${keyFile}.pub`, 'utf8').trim() },
  };
  const pub = (line: string) => line.split(' ').slice(0, 2).join(' ');
  const newKnownHosts = join(keyDir, 'known_hosts');
  writeFileSync(newKnownHosts, `${newIp} ${pub(id.hostKey.publicLine)}\n`);
  // The snapshot's (old) host key pinned for the new address: must now be refused.
  const oldKeyKnownHosts = join(keyDir, 'old_known_hosts');
  writeFileSync(oldKeyKnownHosts, `${newIp} ${readFileSync(seed.keys.knownHosts, 'utf8').trim().split(' ').slice(1).join(' ')}\n`);
  const newNet: TestNet = { ...net, guestIp: newIp };

  // Learn neighbours from gratuitous ARP (Linux creates no entry from one by default): the entry
  // for the new IP can then only come from the guest's announcement, since nothing sent to it yet.
  assert.equal(nsRun(['sysctl', '-qw', `net.ipv4.conf.${net.tap}.arp_accept=1`]).status, 0);
  const neighbour = () =>
    (JSON.parse(nsRun(['ip', '-j', 'neigh', 'show', 'dev', net.tap]).stdout || '[]') as { dst: string; lladdr?: string }[]).find((n) => n.dst === newIp);
  assert.equal(neighbour(), undefined, 'no neighbour entry for the new IP before the identity is applied');

  // The agent's virtio-serial port takes a moment to be reopened after the v1 probes above.
  const conn = await until('a protocol v2 agent connection', vm, 60_000, async () => {
    try {
      return await AgentConnection.open(await connectUnix(vm.agentSock), 'identity-test', 5000);
    } catch {
      return undefined;
    }
  });
  try {
    const hostBefore = Date.now();
    await applyIdentity(conn, id, { timeoutMs: 60_000 });

    assert.equal(neighbour()?.lladdr, mac, `the host's neighbour table learnt ${newIp} at ${mac} from the gratuitous ARP`);
    const health = await conn.request({ op: 'health' });
    assert.equal(health.hostname, 'guestbox-2', 'the agent reports the new hostname');
    // Reachability at the new address (this host has no ping: a TCP connect to sshd, 3 s at most).
    const tcp22 = (ip: string) => nsRun(['timeout', '3', 'bash', '-c', `exec 3<>/dev/tcp/${ip}/22`]).status === 0;
    // sshd re-executes itself on the identity's SIGHUP: wait for its listener to be back.
    const reached = await until('a TCP connect to the new IP', vm, 30_000, () => (tcp22(newIp) ? true : undefined)).catch(() => false);
    if (!reached) {
      const state = await guestSh(conn, 'ip addr show eth0; ip route; ip neigh; cat /sys/class/net/eth0/address');
      assert.fail(`the new IP does not answer on port 22\n--- guest ---\n${state}\n--- host ---\n${nsRun(['ip', 'neigh']).stdout}`);
    }
    assert.equal(tcp22(net.guestIp), false, 'the old IP is gone');

    // Pinned SSH to the new IP with the new host key (sshd re-executes on SIGHUP: wait for it).
    const facts = await until('SSH to the new IP with the new pinned host key', vm, 60_000, () => {
      const r = ssh(
        newNet,
        seed.keys,
        newKnownHosts,
        'hostname; cat /etc/hostname /etc/machine-id; cat /sys/class/net/eth0/address; date +%s%3N; grep "# banger" /etc/hosts',
      );
      return r.code === 0 ? r.stdout.trim().split('\n') : undefined;
    });
    const hostAfter = Date.now();
    assert.deepEqual(facts.slice(0, 4), ['guestbox-2', 'guestbox-2', id.machineId, mac]);
    assert.notEqual(id.machineId, oldMachineId);
    const guestMs = Number(facts[4]);
    assert.ok(guestMs >= hostBefore - 1000 && guestMs <= hostAfter + 1000, `guest clock ${guestMs} within 1 s of the host's [${hostBefore}, ${hostAfter}]`);
    assert.equal(facts[5], `${newIp} guestbox-2 # banger`);

    // sshd was told: on SIGHUP it re-executes itself, reloading its host keys, and opens a new
    // listening socket (OpenSSH 9.2 also reads the keys per connection, 9.8+ only in the
    // listener, so the reload is checked on its own: the :22 listener's socket inode changed).
    const listenerAfter = ssh(newNet, seed.keys, newKnownHosts, LISTENER_INODE).stdout.trim();
    assert.match(listenerAfter, /^\d+$/);
    assert.notEqual(listenerAfter, listenerBefore, 'sshd re-executed (SIGHUP) after the new host key was written');

    // The snapshot's host key is no longer what the guest presents.
    const old = ssh(newNet, seed.keys, oldKeyKnownHosts, 'true');
    assert.equal(old.code, 255, `the old host key must be refused: ${old.stdout}${old.stderr}`);
    assert.match(old.stderr, /REMOTE HOST IDENTIFICATION HAS CHANGED|Host key verification failed/);
  } finally {
    conn.close();
  }
});
