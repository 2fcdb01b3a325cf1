import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { BANGER, isRoot, missingTools, TestDaemon } from '../helpers/daemon.js';
import { debianMirrorUnavailable, startDebianMirror, type DebianMirror } from '../helpers/debian-mirror.js';
import { DEBIAN_BARE_INCLUDE, DEBIAN_BARE_REPO, ensureDebianImageInRegistry } from '../helpers/debootstrap.js';
import { TestRegistry } from '../helpers/registry.js';
import { cleanupAll, createNetns, exposeInNetns } from '../helpers/netns.js';
import { leftovers, natVmIds, processesWith, tapOf } from '../helpers/vm-leftovers.js';

/**
 * A real guest whose first boot fails: a bare Debian image (no systemd, no sshd), booted under
 * QEMU TCG with no package mirror and no way out of the test's namespace (its DNS server is the
 * bridge address, where nothing answers), so `apt-get` cannot install systemd and the
 * first-boot script prints `banger-first-boot: error: step 'install' failed: …` and its hint on
 * the console. `vm create` must fail on that line (not at the SSH or first-boot timeout) with
 * the line and the hint, and by the time the CLI returns the VM's QEMU, tap, NAT rules, lease,
 * rows, directory and pinned key are gone (checked at once, without sleeping).
 */
const skip = !isRoot()
  ? 'needs root (namespaces, taps, nft, qemu)'
  : (missingTools('qemu-system-x86_64', 'qemu-img', 'ip', 'nft', 'ssh', 'ssh-keygen', 'mkfs.ext4', 'debugfs', 'skopeo', 'debootstrap', 'docker-registry') ?? debianMirrorUnavailable());

// Guest traffic stays in the namespace: the only DNS server it knows is the bridge (gateway).
const network = { bridge: 'bangerfb0', subnet: '172.16.0.0/24', dns: ['172.16.0.1'] };
// Timeouts far above what a prompt failure takes, so a pass cannot come from a timeout.
const vm = { sshTimeoutSeconds: 600, firstBootTimeoutSeconds: 1200, stopTimeoutSeconds: 30, vcpu: 1, memoryMiB: 512 };
let mirror: DebianMirror | undefined;
let registry: TestRegistry | undefined;
let d: TestDaemon | undefined;
let ns = '';

before(async () => {
  if (skip) return;
  mirror = await startDebianMirror();
  registry = await TestRegistry.start();
  const ref = await ensureDebianImageInRegistry(registry.host, { include: DEBIAN_BARE_INCLUDE, repo: DEBIAN_BARE_REPO });
  ns = createNetns('fberr');
  const exposed = [await exposeInNetns(ns, mirror.port), await exposeInNetns(ns, registry.port)];
  d = new TestDaemon({ netns: ns, env: { BANGER_DEBIAN_MIRROR: mirror.url }, config: { network, vm } });
  await d.start();
  const k = await d.cli(['kernel', 'pull', 'debian-cloud-amd64'], { timeoutMs: 300_000 });
  assert.equal(k.code, 0, k.stderr);
  const i = await d.cli(['image', 'pull', ref, '--name', 'debian-bare', '--kernel-ref', 'debian-cloud-amd64'], { timeoutMs: 300_000 });
  assert.equal(i.code, 0, i.stderr);
  for (const stop of exposed) stop();
}, { timeout: 900_000 });

after(async () => {
  await d?.cleanup();
  cleanupAll(); // kills any QEMU left inside the namespace, then deletes it
  await registry?.stop();
  await mirror?.close();
  if (d) rmSync(d.root, { recursive: true, force: true });
}, { timeout: 180_000 });

test("a first-boot error on the console fails vm create at once with the guest's line and hint, and unwinds everything", { skip, timeout: 900_000 }, async () => {
  const instance = (await d!.json(['daemon', 'status'])).instanceId as string;
  assert.match(instance, /^[0-9a-f]+$/);
  const child = spawn(process.execPath, [BANGER, '--json', 'vm', 'create', '--image', 'debian-bare', '--name', 'fb', '--nat'], { env: d!.env });
  let stdout = '';
  let stderr = '';
  let installAt = 0;
  let sawQemu = false;
  let sawTap = false;
  let sawRules = false;
  child.stdout.on('data', (b) => (stdout += b));
  child.stderr.on('data', (b) => {
    stderr += b;
    if (!installAt && /first-boot: installing systemd/.test(stderr)) installAt = Date.now();
  });
  const t0 = Date.now();
  const exited = new Promise<number>((r) => child.on('close', (c) => r(c ?? -1)));
  // While it runs: the VM really exists (QEMU, tap and NAT rules), so the unwind below has work to do.
  const watch = setInterval(() => {
    sawQemu ||= processesWith(`banger:${instance}:fb,`).length > 0;
    sawTap ||= !!tapOf(ns, instance, 'fb');
    sawRules ||= natVmIds(ns, instance).length > 0;
  }, 200);
  const code = await exited;
  clearInterval(watch);
  const endAt = Date.now();
  // Checked the moment the CLI returned.
  const left = leftovers(ns, d!.root, instance, 'fb');
  const rules = natVmIds(ns, instance);

  assert.notEqual(code, 0, stderr);
  const err = JSON.parse(stdout).error;
  assert.equal(err.code, 'E_VMM', stdout);
  assert.match(err.message, /step first-boot: .*banger-first-boot: error: step 'install' failed: apt-get could not install systemd and openssh-server/, err.message);
  assert.match(err.hint ?? '', /the guest needs network access to its package mirrors: create the VM with --nat/, JSON.stringify(err));
  assert.match(err.hint ?? '', /banger vm logs/);
  assert.ok(sawQemu && sawTap && sawRules, `the VM existed before it failed (qemu ${sawQemu}, tap ${sawTap}, rules ${sawRules})`);
  assert.ok(installAt > 0, `the create reached the first-boot install:\n${stderr}`);
  assert.deepEqual(left, [], 'nothing of the VM is left');
  assert.deepEqual(rules, [], 'no NAT rules of this instance are left');
  assert.deepEqual(await d!.json(['vm', 'list']), [], 'no VM row');
  const afterInstall = (endAt - installAt) / 1000;
  console.log(`# first-boot error: vm create failed ${((endAt - t0) / 1000).toFixed(1)} s after it started, ${afterInstall.toFixed(1)} s after the install began (TCG)`);
  // Prompt: far below vm.firstBootTimeoutSeconds (1200 s) and vm.sshTimeoutSeconds (600 s).
  assert.ok(afterInstall < 300, `failed ${afterInstall} s after the install began`);
});
