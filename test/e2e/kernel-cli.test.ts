import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isRoot, TestDaemon } from '../helpers/daemon.js';
import { cleanupAll, createNetns, exposeInNetns } from '../helpers/netns.js';
import { BundleServer, catalogDoc, goodBundle, maliciousBundles, missingToolsReason, sha256 } from '../helpers/kernel-bundles.js';
import { fakeElfVmlinux } from '../helpers/fake-vmlinux.js';

/**
 * The built CLI (`bin/banger`) against an isolated daemon in its own network namespace, whose
 * remote catalog (BANGER_KERNEL_CATALOGS) is served from a loopback HTTP server (exposed at the
 * same 127.0.0.1 URL inside the namespace).
 */
const skip = missingToolsReason('tar', 'zstd') ?? (isRoot() ? undefined : 'needs root (a network namespace for the daemon)');
let ns = '';
const srv = new BundleServer();
let d: TestDaemon;
const good = skip ? undefined : goodBundle();
const big = skip ? undefined : goodBundle({ vmlinux: randomBytes(512 * 1024) });
const conc = skip ? undefined : goodBundle({ vmlinux: randomBytes(1024) });
const ttyb = skip ? undefined : goodBundle({ vmlinux: randomBytes(400 * 1024) });
const noPty = skip ?? missingToolsReason('python3');

before(
  async () => {
    if (skip) return;
    await srv.start();
    const mal = maliciousBundles().find((m) => m.label === 'symlink to an absolute path')!;
    srv.set('/good.tar.zst', good!.bundle);
    srv.set('/slow.tar.zst', { body: big!.bundle, slowChunk: 1024 });
    srv.set('/conc.tar.zst', { body: conc!.bundle, delayMs: 300 });
    srv.set('/mal.tar.zst', mal.bundle);
    srv.set('/tty.tar.zst', { body: ttyb!.bundle, slowChunk: 8 * 1024 });
    srv.set(
      '/catalog.json',
      JSON.stringify(
        catalogDoc(
          [
            { name: 'tk', path: '/good.tar.zst', bundle: good!.bundle, description: 'test kernel' },
            { name: 'slowk', path: '/slow.tar.zst', bundle: big!.bundle },
            { name: 'conck', path: '/conc.tar.zst', bundle: conc!.bundle },
            { name: 'malk', path: '/mal.tar.zst', bundle: mal.bundle },
            { name: 'ttyk', path: '/tty.tar.zst', bundle: ttyb!.bundle },
          ],
          srv,
        ),
      ),
    );
    ns = createNetns('kcli');
    await exposeInNetns(ns, srv.port);
    d = new TestDaemon({ netns: ns, env: { BANGER_KERNEL_CATALOGS: srv.url('/catalog.json') } });
    await d.start();
  },
  { timeout: 900_000 },
);

after(
  async () => {
    await d?.cleanup();
    cleanupAll();
    await srv.stop();
  },
  { timeout: 120_000 },
);

/** Run the CLI from another working directory (relative paths). */
function cliIn(cwd: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const argv = d.cliArgv(args);
    const child = spawn(argv[0]!, argv.slice(1), { env: d.env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => (stdout += c));
    child.stderr.on('data', (c) => (stderr += c));
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

/** Entries under tmp/ and kernels/ of the daemon's root. */
function scratch(): string[] {
  const ls = (p: string) => readdirSync(join(d.root, p)).map((n) => `${p}/${n}`);
  return [...ls('tmp'), ...ls('kernels')].sort();
}

test('kernel list --available: the catalog with STATE and human SIZE; --json is one document', { skip }, async () => {
  const r = await d.cli(['kernel', 'list', '--available']);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  assert.match(lines[0]!, /^NAME\s+DISTRO\s+ARCH\s+VERSION\s+SIZE\s+STATE\s+DESCRIPTION$/);
  const tk = lines.find((l) => l.startsWith('tk '))!;
  assert.match(tk, /^tk\s+test\s+x86_64\s+6\.1\.0-test\s+\d+(\.\d)? (B|KiB)\s+available\s+test kernel$/);
  assert.ok(
    lines.some((l) => /^debian-cloud-amd64\s+debian\s+x86_64\s+-\s+~66\.8 MiB\s+available\s/.test(l)),
    r.stdout,
  );
  const j = await d.json(['kernel', 'list', '--available']);
  assert.deepEqual(
    j.entries.map((e: any) => e.name),
    ['conck', 'debian-cloud-amd64', 'malk', 'slowk', 'tk', 'ttyk'],
  );
  assert.equal(j.entries.find((e: any) => e.name === 'tk').sizeBytes, good!.bundle.length);
});

test('kernel pull, show, list, STATE pulled, refusal without --force, --force uses the cache, rm', { skip }, async () => {
  const r = await d.cli(['kernel', 'pull', 'tk']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^pulled kernel tk 6\.1\.0-test \(downloaded, /);
  assert.match(r.stderr, /download tk: /, 'one progress line per stage on a non-TTY');
  assert.match(r.stderr, /extract tk: /);
  const show = await d.json(['kernel', 'show', 'tk']);
  assert.equal(show.vmlinuxSha256, sha256(good!.vmlinux));
  assert.equal(show.manifest.source, `pull:${srv.url('/good.tar.zst')}`);
  assert.equal(show.dir, join(d.root, 'kernels', 'tk'));
  const human = await d.cli(['kernel', 'show', 'tk']);
  assert.match(human.stdout, /^name:\s+tk$/m);
  assert.match(human.stdout, new RegExp(`^sha256:\\s+${sha256(good!.vmlinux)}`, 'm'));
  const list = await d.cli(['kernel', 'list']);
  assert.match(list.stdout, /^NAME\s+DISTRO\s+ARCH\s+VERSION\s+SIZE\s+CREATED\s+SOURCE\n/);
  assert.match(list.stdout, /^tk\s+test\s+x86_64\s+6\.1\.0-test\s/m);
  const avail = await d.cli(['kernel', 'list', '--available']);
  assert.match(avail.stdout, /^tk\s.*\spulled\s+test kernel$/m);
  const again = await d.cli(['kernel', 'pull', 'tk']);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /^error: kernel 'tk' is already pulled$/m);
  assert.match(again.stderr, /^hint: .*--force/m);
  const againJson = await d.cli(['--json', 'kernel', 'pull', 'tk']);
  assert.equal(JSON.parse(againJson.stdout).error.code, 'E_EXISTS');
  const forced = await d.json(['kernel', 'pull', 'tk', '--force']);
  assert.equal(forced.download, 'cached');
  assert.equal(forced.replaced, true);
  assert.equal(srv.count('/good.tar.zst'), 1);
  const rm = await d.json(['kernel', 'rm', 'tk']);
  assert.deepEqual(rm, { removed: ['tk'], usedBy: [] });
  assert.deepEqual(await d.json(['kernel', 'list']), []);
  assert.deepEqual(scratch(), []);
});

test('a rejected bundle over the CLI: exit 1, message names the entry, hint states the rule, nothing left', { skip }, async () => {
  const r = await d.cli(['kernel', 'pull', 'malk']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /error: kernel malk: unsafe bundle entry 'passwd': is a symlink to the absolute path '\/etc\/passwd'/);
  assert.match(r.stderr, /hint: a kernel bundle may contain only regular files, directories and symlinks/);
  assert.deepEqual(scratch(), []);
  const bad = await d.cli(['kernel', 'pull', '../x']);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /invalid field 'name'/);
});

test('two concurrent CLI pulls of one kernel: one download, both succeed, one reports the cache', { skip }, async () => {
  const [a, b] = await Promise.all([d.json(['kernel', 'pull', 'conck']), d.json(['kernel', 'pull', 'conck'])]);
  assert.equal(srv.count('/conc.tar.zst'), 1);
  assert.deepEqual([a.download, b.download].sort(), ['cached', 'downloaded']);
  await d.json(['kernel', 'rm', 'conck']);
});

test('Ctrl-C during a pull cancels the daemon work and leaves nothing behind', { skip }, async () => {
  const argv = d.cliArgv(['kernel', 'pull', 'slowk']); // ip netns exec execs the CLI: the pid is the CLI's
  const child = spawn(argv[0]!, argv.slice(1), { env: d.env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no download progress: ${stderr}`)), 30000);
    child.stderr.on('data', (c) => {
      stderr += c;
      if (/download slowk/.test(stderr)) {
        clearTimeout(t);
        resolve();
      }
    });
  });
  child.kill('SIGINT'); // mid-download: its progress line is out
  const code = await exited;
  assert.notEqual(code, 0, stderr);
  assert.match(stderr, /cancel/i);
  // The README promises the cleanup is done when the CLI exits: checked at once, no polling.
  const logTail = () =>
    readFileSync(join(d.root, 'logs', 'bangerd.log'), 'utf8')
      .split('\n')
      .slice(-15)
      .join('\n');
  assert.deepEqual(scratch(), [], `cli stderr:\n${stderr}\ndaemon log:\n${logTail()}`);
  assert.deepEqual(
    readdirSync(join(d.root, 'blobs', 'sha256')).filter((n) => n === sha256(big!.bundle)),
    [],
  );
  assert.equal((await d.json(['kernel', 'list'])).length, 0);
});

test('kernel import from a relative path through the CLI, then a daemon restart (graceful and SIGKILL) keeps it', { skip }, async () => {
  const src = mkdtempSync(join(tmpdir(), 'banger-kcli-'));
  try {
    writeFileSync(join(src, 'vmlinux'), fakeElfVmlinux({ release: '6.6.6-imp' }));
    const r = await cliIn(src, ['--json', 'kernel', 'import', 'imp', '--vmlinux', 'vmlinux', '--distro', 'mine']);
    assert.equal(r.code, 0, r.stderr);
    const k = JSON.parse(r.stdout);
    assert.equal(k.kernelVersion, '6.6.6-imp');
    assert.equal(k.source, `import:${join(src, 'vmlinux')}`);
    const missing = await d.cli(['kernel', 'import', 'imp2', '--vmlinux', '/nonexistent/vmlinux']);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /--vmlinux \/nonexistent\/vmlinux: no such file/);
    await d.json(['kernel', 'pull', 'tk']);
    const before = await d.json(['kernel', 'list']);
    assert.deepEqual(
      before.map((x: any) => x.name),
      ['imp', 'tk'],
    );
    await d.stop();
    await d.start();
    assert.deepEqual(await d.json(['kernel', 'list']), before);
    await d.kill();
    await d.start();
    assert.deepEqual(await d.json(['kernel', 'list']), before);
    assert.match((await d.cli(['kernel', 'list', '--available'])).stdout, /^tk\s.*\spulled\s/m);
  } finally {
    rmSync(src, { recursive: true, force: true });
  }
});

test('on a terminal, kernel pull draws a progress bar with bytes and total', { skip: noPty }, async () => {
  // python's pty module gives the CLI a real pseudo-terminal (argv only, no shell).
  const child = spawn('python3', ['-c', 'import pty, sys; sys.exit(pty.spawn(sys.argv[1:]) >> 8)', ...d.cliArgv(['kernel', 'pull', 'ttyk'])], {
    env: { ...d.env, COLUMNS: '120' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (c) => (out += c));
  child.stderr.on('data', (c) => (out += c));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  assert.equal(code, 0, out);
  const total = (ttyb!.bundle.length / 1024).toFixed(1);
  assert.match(out, new RegExp(`download ttyk\\s+\\[#*-+\\] [\\d.]+ (B|KiB) / ${total.replace('.', '\\.')} KiB`), out);
  assert.match(out, /\x1b\[\d+A/, 'the bar is redrawn in place');
  assert.match(out, /pulled kernel ttyk /);
  await d.json(['kernel', 'rm', 'ttyk']);
});

test('a daemon without catalogs uses the ones the CLI forwards from its own BANGER_KERNEL_CATALOGS', { skip }, async () => {
  const plain = new TestDaemon({ netns: ns });
  await plain.start();
  try {
    const without = await plain.json(['kernel', 'list', '--available']);
    assert.deepEqual(
      without.entries.map((e: any) => e.name),
      ['debian-cloud-amd64'],
    );
    const env = { BANGER_KERNEL_CATALOGS: srv.url('/catalog.json') };
    const avail = await plain.cli(['--json', 'kernel', 'list', '--available'], { env });
    assert.equal(avail.code, 0, avail.stderr);
    assert.ok(JSON.parse(avail.stdout).entries.some((e: any) => e.name === 'tk'));
    const pulled = await plain.cli(['--json', 'kernel', 'pull', 'tk'], { env });
    assert.equal(pulled.code, 0, pulled.stderr);
    assert.equal(JSON.parse(pulled.stdout).kernel.name, 'tk');
    // An unreachable catalog is skipped with a warning naming it; the readable ones still list.
    const dead = new BundleServer();
    await dead.start();
    const deadUrl = dead.url('/gone.json');
    await dead.stop();
    const both = { BANGER_KERNEL_CATALOGS: `${deadUrl},${srv.url('/catalog.json')}` };
    const partial = await plain.cli(['kernel', 'list', '--available'], { env: both });
    assert.equal(partial.code, 0, partial.stderr);
    assert.match(partial.stdout, /^tk\s/m);
    assert.ok(partial.stderr.includes(`warning: skipped kernel catalog ${deadUrl}`), partial.stderr);
    const partialJson = JSON.parse((await plain.cli(['--json', 'kernel', 'list', '--available'], { env: both })).stdout);
    assert.deepEqual(
      partialJson.warnings.map((w: any) => [w.catalog, w.code]),
      [[deadUrl, 'E_HTTP']],
    );
    // A name found in no readable catalog: the error names the catalog that could not be read.
    const missing = await plain.cli(['kernel', 'pull', 'nosuch'], { env: both });
    assert.equal(missing.code, 1);
    assert.ok(missing.stderr.includes(`error: kernel catalog ${deadUrl}`), missing.stderr);
    const bad = await plain.cli(['kernel', 'list', '--available'], { env: { BANGER_KERNEL_CATALOGS: 'file:///etc/shadow' } });
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /invalid field 'catalogs\.0'.*http/);
  } finally {
    await plain.cleanup();
  }
});
