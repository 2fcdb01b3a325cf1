import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BANGER, REPO, type TestDaemon } from '../helpers/daemon.js';
import { type DebianVm, debianVmSkip, startDebianVm } from '../helpers/debian-vm.js';
import { DEBIAN_BARE_INCLUDE, DEBIAN_BARE_REPO } from '../helpers/debootstrap.js';
import { leftovers, natVmIds, processesWith, tapOf } from '../helpers/vm-leftovers.js';

/**
 * A prepare that fails in a real guest: a bare Debian image (no systemd, no sshd), whose first
 * `vm create` must prepare it (vms/prepare.ts), with `--package-mirror` pointing at a server of
 * this test that answers 404 to everything (inside the daemon's namespace, on the bridge
 * address), so the builder VM's `apt-get update` fails and its first-boot script prints
 * `banger-first-boot: error: step 'install' failed: …` and its hint on the console. `vm create`
 * must fail on that line (not at a timeout) quoting it, and by the time the CLI returns the
 * builder VM's QEMU, tap, NAT rules, lease, row, directory and pinned key are gone, no VM was
 * made, and the image has no prepared disk (checked at once, without sleeping), so the next
 * attempt starts clean.
 */
const skip = debianVmSkip();

// Guest traffic stays in the namespace: the only DNS server it knows is the bridge (gateway).
const network = { bridge: 'bangerfb0', subnet: '172.16.0.0/24', dns: ['172.16.0.1'] };
const MIRROR_404 = 'http://172.16.0.1:8089/debian';
// Timeouts far above what a prompt failure takes, so a pass cannot come from a timeout.
const vm = { sshTimeoutSeconds: 600, firstBootTimeoutSeconds: 1200, stopTimeoutSeconds: 30, vcpu: 1, memoryMiB: 512 };
let fx: DebianVm | undefined;
let d: TestDaemon | undefined;
let ns = '';
let server: ChildProcess | undefined;
let served = '';
let emptyRoot = '';

before(
  async () => {
    if (skip) return;
    fx = await startDebianVm({ ns: 'fberr', config: { network, vm }, include: DEBIAN_BARE_INCLUDE, repo: DEBIAN_BARE_REPO, imageName: 'debian-bare' });
    d = fx.d;
    ns = fx.ns;
    // The 404 mirror: an empty directory served on every address of the daemon's namespace.
    emptyRoot = mkdtempSync(join(tmpdir(), 'banger-404-'));
    server = spawn('ip', ['netns', 'exec', ns, process.execPath, join(REPO, 'dist/test/helpers/static-server.js'), emptyRoot, '0.0.0.0', '8089'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    server.stdout!.on('data', (c) => (served += c));
    const deadline = Date.now() + 15_000;
    while (!served.includes('listening')) {
      if (Date.now() > deadline || server.exitCode !== null) throw new Error(`test setup stalled: the 404 server in ${ns} did not start`);
      await new Promise((r) => setTimeout(r, 50));
    }
  },
  { timeout: 900_000 },
);

after(
  async () => {
    server?.kill('SIGKILL');
    await fx?.stop(); // also kills any QEMU left inside the namespace, then deletes it
    if (emptyRoot) rmSync(emptyRoot, { recursive: true, force: true });
  },
  { timeout: 180_000 },
);

test("a prepare whose install fails (a mirror that 404s) fails vm create at once with the guest's line and hint, and leaves no builder VM, prepared disk or VM", {
  skip,
  timeout: 900_000,
}, async () => {
  const instance = (await d!.json(['daemon', 'status'])).instanceId as string;
  assert.match(instance, /^[0-9a-f]+$/);
  const child = spawn(process.execPath, [BANGER, '--json', 'vm', 'create', '--image', 'debian-bare', '--name', 'fb', '--package-mirror', MIRROR_404], {
    env: d!.env,
  });
  let stdout = '';
  let stderr = '';
  let installAt = 0;
  let builder = '';
  let sawQemu = false;
  let sawTap = false;
  let sawRules = false;
  child.stdout.on('data', (b) => (stdout += b));
  child.stderr.on('data', (b) => {
    stderr += b;
    builder ||= /builder VM (prepare-[0-9a-f]+)/.exec(stderr)?.[1] ?? '';
    if (!installAt && /prepare: banger-first-boot: (step install|running: apt-get)/.test(stderr)) installAt = Date.now();
  });
  const t0 = Date.now();
  const exited = new Promise<number>((r) => child.on('close', (c) => r(c ?? -1)));
  // While it runs: the builder VM really exists (QEMU, tap and NAT rules), so the unwind has work to do.
  const watch = setInterval(() => {
    if (!builder) return;
    sawQemu ||= processesWith(`banger:${instance}:${builder},`).length > 0;
    sawTap ||= !!tapOf(ns, instance, builder);
    sawRules ||= natVmIds(ns, instance).length > 0;
  }, 200);
  const code = await exited;
  clearInterval(watch);
  const endAt = Date.now();
  // Checked the moment the CLI returned.
  const left = [...leftovers(ns, d!.root, instance, builder), ...leftovers(ns, d!.root, instance, 'fb')];
  const rules = natVmIds(ns, instance);

  assert.notEqual(code, 0, stderr);
  assert.match(builder, /^prepare-[0-9a-f]+$/, `the create started a builder VM:\n${stderr}`);
  const err = JSON.parse(stdout).error;
  assert.equal(err.code, 'E_VMM', stdout);
  assert.match(
    err.message,
    /step prepare: the builder VM's first boot failed: banger-first-boot: error: step 'install' failed: apt-get could not install systemd and openssh-server/,
    err.message,
  );
  assert.match(err.hint ?? '', /the guest must reach the package mirror http:\/\/172\.16\.0\.1:8089\/debian/, JSON.stringify(err));
  assert.ok(sawQemu && sawTap && sawRules, `the builder VM existed before it failed (qemu ${sawQemu}, tap ${sawTap}, rules ${sawRules})`);
  assert.match(served, /GET debian\/dists\/bookworm\/InRelease/, 'the guest asked the 404 mirror');
  assert.deepEqual(left, [], 'nothing of the builder VM or the VM is left');
  assert.deepEqual(rules, [], 'no NAT rules of this instance are left');
  assert.deepEqual(await d!.json(['vm', 'list']), [], 'no VM row');
  assert.equal((await d!.json(['image', 'show', 'debian-bare'])).prepared, null, 'no prepared disk recorded');
  const prepDir = join(d!.root, 'prepared', 'debian-bare');
  assert.deepEqual(existsSync(prepDir) ? readdirSync(prepDir) : [], [], 'no prepared disk file');
  console.log(
    `# failed prepare: vm create failed ${((endAt - t0) / 1000).toFixed(1)} s after it started${installAt ? `, ${((endAt - installAt) / 1000).toFixed(1)} s after the install began` : ''} (TCG)`,
  );
});
