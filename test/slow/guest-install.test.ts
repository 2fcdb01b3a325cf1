import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
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
  debootstrapRootfs,
  debootstrapUnavailable,
  extraDebs,
  flatRepo,
  guestSsh,
  mkfsFromDir,
  until,
  type GuestVm,
} from '../helpers/guest-fixtures.js';
import { isRoot, missingTools } from '../helpers/daemon.js';

/**
 * The path `debian:bookworm` from a registry takes: a root filesystem with NO systemd, no sshd
 * and no iproute2 (debootstrap minbase, like the registry image). banger-first-boot must
 * install them with apt-get from the guest's own sources, then exec systemd. The guest's
 * sources point at a flat apt repository served by busybox httpd inside the test's network
 * namespace (the .debs debootstrap fetched, plus ca-certificates/openssl), so the guest never
 * reaches the internet. Slow tier: package installation under TCG takes minutes.
 */
const skip = !isRoot()
  ? 'needs root (network namespace, tap, debootstrap)'
  : (missingTools('qemu-system-x86_64', 'mkfs.ext4', 'ip', 'ssh', 'ssh-keygen', 'dpkg-deb', 'dpkg-scanpackages', 'busybox') ??
    (!existsSync('/dev/net/tun') ? 'no /dev/net/tun' : (debianMirrorUnavailable() ?? debootstrapUnavailable())));

const NAME = 'installbox';
const REPO_PORT = 8080;

let dir: string;
let kernelDir: string;
let tree: string;

before(
  async () => {
    if (skip) return;
    dir = mkdtempSync(join(tmpdir(), 'banger-guestinstall-'));
    const mirror = await startDebianMirror();
    try {
      kernelDir = await fetchTestKernel(dir, mirror);
    } finally {
      await mirror.close();
    }
    debootstrapRootfs('systemd'); // its .debs feed the repository
    tree = join(dir, 'rootfs');
    copyTree(debootstrapRootfs('minbase'), tree);
    flatRepo(join(dir, 'repo'), [`${debootstrapRootfs('systemd')}.debs`, `${debootstrapRootfs('minbase')}.debs`, extraDebs()]);
  },
  { timeout: 3_600_000 },
);

after(
  () => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  },
  { timeout: 120_000 },
);

test('a rootfs without systemd: first boot installs systemd + openssh with apt-get, then SSH and the agent work', { skip, timeout: 2_400_000 }, async () => {
  let net: TestNet | undefined;
  let vm: GuestVm | undefined;
  let httpd: ChildProcess | undefined;
  try {
    net = createTestNet('gin');
    assert.equal(existsSync(join(tree, 'lib/systemd/systemd')), false, 'the image has no systemd');
    assert.equal(existsSync(join(tree, 'usr/sbin/sshd')), false, 'the image has no sshd');
    rmSync(join(tree, 'etc/apt/sources.list.d'), { recursive: true, force: true });
    writeFileSync(join(tree, 'etc/apt/sources.list'), `deb [trusted=yes] http://${net.hostIp}:${REPO_PORT}/ ./\n`);
    await injectGuestFiles(tree, { exec, log: nullLogger });
    const rootImg = join(dir, 'root.ext4');
    mkfsFromDir(tree, rootImg, '2G');

    httpd = spawn('ip', ['netns', 'exec', net.ns, 'busybox', 'httpd', '-f', '-p', `${net.hostIp}:${REPO_PORT}`, '-h', join(dir, 'repo')], { stdio: 'ignore' });
    const seed = buildSeed(join(dir, 'seed-run'), { name: NAME, ip: net.guestIp, prefix: 24, gateway: net.hostIp, dns: net.hostIp });
    vm = await bootGuest({ dir, kernelDir, rootImg, seedImg: seed.img, net, name: NAME });

    const out = await until('SSH after first-boot package installation', vm, 1_800_000, () => {
      const r = guestSsh(
        net!,
        seed.keys,
        seed.keys.knownHosts,
        'id; systemctl is-active banger-vsock-agent; systemctl is-system-running --wait; cat /var/lib/banger/first-boot.done; test -e /usr/sbin/policy-rc.d && echo policy-left',
      );
      return r.code === 0 || /running|degraded/.test(r.stdout) ? r.stdout : undefined;
    });
    const lines = out.trim().split('\n');
    assert.match(lines[0]!, /^uid=0\(root\)/);
    assert.equal(lines[1], 'active');
    assert.equal(lines[2], 'running', out);
    assert.ok(lines.includes('init=/lib/systemd/systemd'), out);
    assert.ok(!lines.includes('policy-left'), 'temporary policy-rc.d removed');

    const text = vm.console();
    assert.match(text, /banger-first-boot: step install: systemd is missing/);
    assert.match(text, /banger-first-boot: running: apt-get install -y --no-install-recommends systemd systemd-sysv openssh-server iproute2 ca-certificates/);
    assert.match(text, /banger-first-boot: step exec-init: \/lib\/systemd\/systemd/);
    assert.doesNotMatch(text, /banger-first-boot: error/);

    const health = await until('agent health', vm, 60_000, () => agentRequest(vm!.agentSock, '{"op":"health"}'));
    assert.equal(health.hostname, NAME);
  } finally {
    await vm?.kill();
    httpd?.kill('SIGKILL');
    net?.destroy();
  }
});
