import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isRoot, missingTools, REPO, TestDaemon } from '../helpers/daemon.js';
import { debianMirrorUnavailable, startDebianMirror, type DebianMirror } from '../helpers/debian-mirror.js';
import { DEBIAN_BARE_INCLUDE, DEBIAN_BARE_REPO, ensureDebianImageInRegistry } from '../helpers/debootstrap.js';
import { TestRegistry } from '../helpers/registry.js';
import { cleanupAll, createNetns, exposeInNetns, vethPair } from '../helpers/netns.js';

/**
 * banger's headline path, through the built CLI and one daemon in its own network namespace:
 * a bare Debian bookworm root filesystem (debootstrap minbase: no systemd, no sshd, no
 * iproute2, the shape of docker.io/library/debian:bookworm) pushed to a local registry,
 * `image pull`, then
 *   vm create --nat --package-mirror http://10.201.0.2:8080/debian
 * where 10.201.0.2 is a namespace of this test (veth from the daemon's namespace) serving a
 * Debian mirror subset: Debian's own signed InRelease, Packages.xz (+ by-hash) and the .debs the
 * install needs, fetched and verified at setup (helpers/debian-archive-cache.ts), so the
 * guest's apt verifies signatures as it would on the internet. The first boot installs
 * systemd + openssh-server from it (QEMU TCG; minutes), then
 *   vm ssh NAME -- "id; uname -r; systemctl is-active banger-vsock-agent"
 * prints uid=0, the kernel release and `active`, `vm ports` answers through the agent, and
 * `vm restart` boots straight into systemd. (This replaces guest-session.test.ts, which ran the
 * same session on an image with systemd preinstalled: one TCG boot fewer in CI.)
 */
const skip = !isRoot()
  ? 'needs root (namespaces, taps, nft, qemu)'
  : (missingTools('qemu-system-x86_64', 'qemu-img', 'ip', 'nft', 'ssh', 'ssh-keygen', 'mkfs.ext4', 'debugfs', 'skopeo', 'debootstrap', 'docker-registry', 'socat') ?? debianMirrorUnavailable());

const MIRROR_ADDR = '10.201.0.2';
const MIRROR_URL = `http://${MIRROR_ADDR}:8080/debian`;
const config = { vm: { sshTimeoutSeconds: 300, firstBootTimeoutSeconds: 840, stopTimeoutSeconds: 60, vcpu: 2, memoryMiB: 1024 } };

let mirror: DebianMirror | undefined;
let registry: TestRegistry | undefined;
let d: TestDaemon | undefined;
let server: ChildProcess | undefined;
let served = '';
let webRoot = '';
let kernelRelease = '';

before(async () => {
  if (skip) return;
  mirror = await startDebianMirror({ install: true });
  registry = await TestRegistry.start();
  const ref = await ensureDebianImageInRegistry(registry.host, { include: DEBIAN_BARE_INCLUDE, repo: DEBIAN_BARE_REPO });
  const hostNs = createNetns('hlhost');
  const mirrorNs = createNetns('hlmirror');
  const exposed = [await exposeInNetns(hostNs, mirror.port), await exposeInNetns(hostNs, registry.port)];
  d = new TestDaemon({ netns: hostNs, env: { BANGER_DEBIAN_MIRROR: mirror.url }, config });
  await d.start();
  const k = await d.cli(['kernel', 'pull', 'debian-cloud-amd64'], { timeoutMs: 300_000 });
  assert.equal(k.code, 0, k.stderr);
  kernelRelease = (await d.json(['kernel', 'show', 'debian-cloud-amd64'])).kernelVersion;
  const i = await d.cli(['image', 'pull', ref, '--name', 'debian-bare', '--kernel-ref', 'debian-cloud-amd64'], { timeoutMs: 300_000 });
  assert.equal(i.code, 0, i.stderr);
  for (const stop of exposed) stop();

  // The mirror subset, served at http://10.201.0.2:8080/debian from a namespace of its own.
  vethPair(hostNs, 'mirror0', '10.201.0.1/24', mirrorNs, 'eth0', `${MIRROR_ADDR}/24`);
  webRoot = mkdtempSync(join(tmpdir(), 'banger-hlweb-'));
  symlinkSync(mirror.root, join(webRoot, 'debian'));
  server = spawn('ip', ['netns', 'exec', mirrorNs, process.execPath, join(REPO, 'dist/test/helpers/static-server.js'), webRoot, MIRROR_ADDR, '8080'], { stdio: ['ignore', 'pipe', 'inherit'] });
  server.stdout!.on('data', (c) => (served += c));
  const deadline = Date.now() + 15_000;
  while (!served.includes('listening')) {
    if (Date.now() > deadline || server.exitCode !== null) throw new Error(`test setup stalled: the mirror server in ${mirrorNs} did not start`);
    await new Promise((r) => setTimeout(r, 50));
  }
}, { timeout: 1_200_000 });

after(async () => {
  await d?.cli(['vm', 'rm', '-f', 'bare1'], { timeoutMs: 120_000 }).catch(() => undefined);
  server?.kill('SIGKILL');
  await d?.cleanup();
  cleanupAll();
  await registry?.stop();
  await mirror?.close();
  if (webRoot) rmSync(webRoot, { recursive: true, force: true });
}, { timeout: 180_000 });

// Measured: the install alone 378 s under TCG on a 2-core machine shared with other test runs
// (create 591 s, the whole test 791 s); an idle runner is about twice as fast.
test('a bare Debian image (no systemd, no sshd) boots into SSH: first boot installs from --package-mirror; restart installs nothing', { skip, timeout: 1_200_000 }, async () => {
  const t0 = Date.now();
  const c = await d!.cli(['vm', 'create', '--image', 'debian-bare', '--name', 'bare1', '--nat', '--package-mirror', MIRROR_URL], { timeoutMs: 900_000 });
  const createSeconds = (Date.now() - t0) / 1000;
  assert.equal(c.code, 0, `vm create: ${c.stderr}\n${(await d!.cli(['vm', 'logs', 'bare1'])).stdout.slice(-4000)}`);
  assert.match(c.stderr, /first-boot: installing systemd and an SSH server/, `the create shows the first-boot stage:\n${c.stderr}`);
  assert.match(c.stderr, /first-boot: (Get:\d+|Unpacking|Setting up|banger-first-boot:) /, 'progress lines from the console');
  assert.match(c.stderr, /first-boot: installed in \d+ s/);
  assert.match(c.stderr, /agent.*healthy/i, `create reports the agent healthy:\n${c.stderr}`);

  const s = await d!.cli(['vm', 'ssh', 'bare1', '--', 'id; uname -r; systemctl is-active banger-vsock-agent'], { timeoutMs: 120_000 });
  assert.equal(s.code, 0, s.stderr);
  const [id, release, active] = s.stdout.trim().split('\n');
  assert.match(id!, /^uid=0\(root\)/);
  assert.equal(release, kernelRelease);
  assert.equal(active, 'active');

  // The agent answers `vm ports` (sshd on 22), and vm ssh returns the remote exit code.
  const p = await d!.json(['vm', 'ports', 'bare1'], { timeoutMs: 60_000 });
  assert.equal(p.agent, true);
  assert.ok(p.ports.some((x: any) => x.proto === 'tcp' && x.port === 22), JSON.stringify(p.ports));
  const f = await d!.cli(['vm', 'ssh', 'bare1', '--', 'systemctl is-active no-such-unit-here'], { timeoutMs: 60_000 });
  assert.notEqual(f.code, 0);

  // The console shows the install, from the mirror, and the image's sources coming back.
  const log = (await d!.cli(['vm', 'logs', 'bare1'])).stdout;
  assert.match(log, /banger-first-boot: step install: systemd is missing/);
  assert.ok(log.includes(`package mirror for this install: ${MIRROR_URL}`), log.slice(-3000));
  assert.match(log, /Setting up openssh-server/);
  assert.match(log, /the image's own package sources apply again/);
  // The guest's apt fetched the signed InRelease, the index and the packages from the mirror.
  for (const p of ['GET debian/dists/bookworm/InRelease', 'GET debian/pool/main/s/systemd/systemd_', 'GET debian/pool/main/o/openssh/openssh-server_']) assert.ok(served.includes(p), `mirror served ${p}`);
  assert.match(served, /GET debian\/dists\/bookworm\/main\/binary-amd64\/(by-hash\/SHA256\/[0-9a-f]{64}|Packages\.xz)/);
  const show = await d!.cli(['vm', 'show', 'bare1']);
  assert.ok(show.stdout.includes(`first boot installs from ${MIRROR_URL}`), show.stdout);
  const sources = await d!.cli(['vm', 'ssh', 'bare1', '--', 'cat /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null; ls /var/lib/banger']);
  assert.doesNotMatch(sources.stdout, /10\.201\.0\.2/, 'the guest keeps its own apt sources');

  // Install time, from the first-boot script's uptime stamps.
  const at = (step: string) => Number(new RegExp(`step ${step}[^\\n]*\\(at ([\\d.]+) s\\)`).exec(log)?.[1]);
  const install = at('configure') - at('install');
  console.log(`# first-boot install under ${process.env.BANGER_TEST_KVM ? 'KVM' : 'TCG'}: ${install.toFixed(1)} s (guest uptime ${at('install')} → ${at('configure')} s); vm create took ${createSeconds.toFixed(1)} s`);
  assert.ok(install > 0);

  const r = await d!.cli(['vm', 'restart', 'bare1'], { timeoutMs: 400_000 });
  assert.equal(r.code, 0, r.stderr);
  const again = (await d!.cli(['vm', 'logs', 'bare1'])).stdout;
  const lastBoot = again.slice(again.lastIndexOf('banger-first-boot: starting'));
  assert.match(lastBoot, /step exec-init: \/lib\/systemd\/systemd/);
  assert.doesNotMatch(lastBoot, /step install/, 'the restart installs nothing');
  const s2 = await d!.cli(['vm', 'ssh', 'bare1', '--', 'systemctl is-active banger-vsock-agent'], { timeoutMs: 120_000 });
  assert.equal(s2.stdout.trim(), 'active', s2.stderr);
});
