import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, rmdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { isRoot, missingTools, type TestDaemon } from '../helpers/daemon.js';
import { startFirecrackerCli, type FirecrackerCliFixture } from '../helpers/firecracker-cli-fixture.js';
import { makeStandinJailer } from '../helpers/firecracker-standin/index.js';
import { bridgeInstance, leftovers, processesWith } from '../helpers/vm-leftovers.js';

/**
 * Jailer mode (`firecracker.jailer.enabled`) through the built CLI against an isolated daemon
 * (own network namespace). `firecracker.jailer.binary` is the STAND-IN jailer (parses the real
 * argv, creates the chroot dir, copies the exec file, makes and enters a cgroup where one is
 * visible (not in the daemon's netns: /sys is remounted there), drops to the VM's uid/gid with setpriv and execs in place; no chroot(2): the stand-in
 * Firecracker resolves its paths under the chroot directory). Checks: the jail's layout and
 * owners, the API socket and pid inside the chroot, stop/start, daemon SIGKILL + adopt of the
 * jailed process, rm → chroot and cgroup gone; a failing step unwinds the jail.
 */
const skip = !isRoot()
  ? 'needs root (namespaces, taps, nft, chown, cgroups)'
  : (missingTools('ip', 'nft', 'mkfs.ext4', 'debugfs', 'ssh-keygen', 'setpriv') ??
    (existsSync('/sys/fs/cgroup/cpu') ? undefined : 'needs the cgroup v1 cpu controller at /sys/fs/cgroup/cpu'));
const jailer = makeStandinJailer();
const parentCgroup = `banger-test-${process.pid}`;
let fx: FirecrackerCliFixture | undefined;
let ns = '';
let d: TestDaemon;
let standin: FirecrackerCliFixture['standin'];
let chrootBase = '';
let instance = '';

before(
  async () => {
    if (skip) return;
    chrootBase = mkdtempSync('/tmp/bj-'); // short: the host path of the jail's API socket must fit a Unix socket path
    chmodSync(chrootBase, 0o755); // no chroot(2) in the stand-in: the VM's uid walks the host path
    const jcfg = { enabled: true, binary: jailer.binary, chrootBaseDir: chrootBase, uidBase: 900_000, cgroupVersion: 1, parentCgroup };
    // hostCgroups: the daemon (and so the jailer) sees the host's cgroup hierarchies, as an installed one does.
    fx = await startFirecrackerCli({ tag: 'fcjail', bridge: 'bgfj0', subnet: '10.88.0.0/24', config: { firecracker: { jailer: jcfg } }, hostCgroups: true });
    ({ d, ns, standin } = fx);
  },
  { timeout: 600_000 },
);

after(
  async () => {
    await fx?.stop();
    jailer.remove();
    for (const c of HIERARCHIES) {
      try {
        rmdirSync(join('/sys/fs/cgroup', c, parentCgroup));
      } catch {
        /* never made, or a jail cgroup left (then the test failed already) */
      }
    }
    if (chrootBase) rmSync(chrootBase, { recursive: true, force: true });
  },
  { timeout: 120_000 },
);

const jails = () => (existsSync(join(chrootBase, 'firecracker')) ? readdirSync(join(chrootBase, 'firecracker')) : []);
/** The v1 hierarchies the jailer makes groups in: cpu always, memory and pids for the VM's limits (docs/limits.md). */
const HIERARCHIES = ['cpu', 'memory', 'pids'];
const cgroups = () =>
  HIERARCHIES.flatMap((c) =>
    existsSync(join('/sys/fs/cgroup', c, parentCgroup))
      ? readdirSync(join('/sys/fs/cgroup', c, parentCgroup), { withFileTypes: true })
          .filter((e) => e.isDirectory())
          .map((e) => `${c}/${e.name}`)
      : [],
  );

function nothingLeft(name: string): void {
  instance ||= bridgeInstance(ns, 'bgfj0');
  const found = leftovers(ns, d.root, instance, name);
  for (const pid of processesWith(`bg-${instance}-`)) {
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    if (argv.includes(`/run/${name}/`)) found.push(`jailed firecracker process ${pid}`);
  }
  found.push(...jails().map((j) => `jail ${j}`), ...cgroups().map((c) => `cgroup ${c}`));
  assert.deepEqual(found, [], `left behind by ${name}`);
}

test('jailed: create, show, stop, start, SIGKILL daemon + adopt, rm → jail and cgroup gone', { skip, timeout: 300_000 }, async () => {
  const created = await d.cli(['--json', 'vm', 'create', '--image', 'fcimg', '--name', 'fj1', '--vmm', 'firecracker', '--no-wait'], { timeoutMs: 120_000 });
  assert.equal(created.code, 0, created.stderr);
  const show = await d.json(['vm', 'show', 'fj1']);
  assert.equal(show.vmm, 'firecracker');
  assert.equal(show.running, true);
  const [jid] = jails();
  assert.match(jid ?? '', /^bg-[0-9a-f]{12}-[0-9a-f]+$/);
  const root = join(chrootBase, 'firecracker', jid!, 'root');
  const uid = 900_000 + Number.parseInt(jid!.slice(-4), 16);
  assert.ok(existsSync(join(root, 'run', 'fj1', 'firecracker.sock')), 'API socket inside the chroot');
  assert.ok(existsSync(join(root, 'run', 'fj1', 'vsock.sock')), 'vsock UDS inside the chroot');
  assert.equal(Number(readFileSync(join(root, 'firecracker.pid'), 'utf8')), show.pid, 'pid file inside the chroot');
  assert.equal(statSync(join(root, 'root.disk')).ino, statSync(join(d.root, 'vms', 'fj1', 'root.ext4')).ino, 'root disk hard-linked');
  assert.equal(statSync(join(root, 'root.disk')).uid, uid, 'the VM owns its disk');
  assert.equal(statSync(join(root, 'vmlinux')).uid, 0, 'the shared kernel keeps its owner');
  const st = readFileSync(`/proc/${show.pid}/status`, 'utf8');
  assert.match(st, new RegExp(`^Uid:\\s+${uid}\\s`, 'm'), 'Firecracker runs as the VM uid');
  // The VM's limits went to the jailer as its own --cgroup arguments: its groups carry them, with Firecracker inside.
  const mem = (show.spec.memoryMiB + show.spec.limits.memoryMaxMiB - show.spec.memoryMiB) * 1048576;
  assert.equal(readFileSync(join('/sys/fs/cgroup/memory', parentCgroup, jid!, 'memory.limit_in_bytes'), 'utf8').trim(), String(mem));
  assert.equal(readFileSync(join('/sys/fs/cgroup/pids', parentCgroup, jid!, 'pids.max'), 'utf8').trim(), String(show.spec.limits.pidsMax));
  for (const c of HIERARCHIES)
    assert.ok(
      readFileSync(join('/sys/fs/cgroup', c, parentCgroup, jid!, 'cgroup.procs'), 'utf8')
        .split('\n')
        .includes(String(show.pid)),
      `Firecracker in ${c}`,
    );
  assert.deepEqual(cgroups().sort(), HIERARCHIES.map((c) => `${c}/${jid}`).sort(), 'the jailer made the groups; banger made none of its own');
  assert.match(readFileSync(join(root, 'firecracker.log'), 'utf8'), /InstanceStart/);
  assert.equal((await d.json(['vm', 'ports', 'fj1'])).agent, true, 'the agent through the jailed vsock');

  const stop = await d.cli(['vm', 'stop', 'fj1'], { timeoutMs: 60_000 });
  assert.equal(stop.code, 0, stop.stderr);
  assert.equal((await d.json(['vm', 'show', 'fj1'])).running, false);
  assert.deepEqual([jails(), cgroups()], [[], []], 'the jail goes with its process');
  assert.ok(existsSync(join(d.root, 'vms', 'fj1', 'root.ext4')), 'the disk stays');

  const start = await d.cli(['vm', 'start', 'fj1', '--no-wait'], { timeoutMs: 60_000 });
  assert.equal(start.code, 0, start.stderr);
  const pid1 = (await d.json(['vm', 'show', 'fj1'])).pid;
  assert.ok(pid1 > 0);

  await d.kill();
  await d.start();
  const adopted = await d.json(['vm', 'show', 'fj1']);
  assert.deepEqual([adopted.running, adopted.pid], [true, pid1], 'the jailed process is adopted');

  const rm = await d.cli(['vm', 'rm', 'fj1', '--force'], { timeoutMs: 60_000 });
  assert.equal(rm.code, 0, rm.stderr);
  nothingLeft('fj1');
});

test('jailed: a failing step unwinds the jail', { skip, timeout: 120_000 }, async () => {
  standin.setKnobs({ FC_STANDIN_FAIL_PATH: '/vsock' });
  try {
    const r = await d.cli(['--json', 'vm', 'create', '--image', 'fcimg', '--name', 'fjbad', '--vmm', 'firecracker', '--no-wait'], { timeoutMs: 90_000 });
    assert.equal(r.code, 1, r.stdout);
    assert.match(r.stderr, /firecracker step vsock failed/);
    nothingLeft('fjbad');
  } finally {
    standin.setKnobs({});
  }
});
