import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TestDaemon, isRoot, missingTools } from '../helpers/daemon.js';
import { TestRegistry } from '../helpers/registry.js';
import { cleanupAll, createNetns, exposeInNetns } from '../helpers/netns.js';
import { OciLayout, makeTar } from '../helpers/oci.js';
import { ext4Read, fsck } from '../helpers/image-ext4.js';

/** The built CLI against an isolated daemon (own network namespace) and a real local registry (exposed into it on the same 127.0.0.1 address). */
const skip = !isRoot() ? 'needs root' : missingTools('docker-registry', 'skopeo', 'mkfs.ext4', 'debugfs', 'e2fsck', 'setfattr', 'htpasswd');

let reg: TestRegistry;
let daemon: TestDaemon;
let work: string;

before(
  async () => {
    if (skip) return;
    work = mkdtempSync(join(tmpdir(), 'banger-e2e-img-'));
    const layout = new OciLayout(join(work, 'oci'));
    const l = layout.layer(
      makeTar([
        { path: 'etc/', type: 'dir' },
        { path: 'etc/motd', data: 'hello from the registry\n' },
        { path: 'bin/', type: 'dir' },
        { path: 'bin/sh', data: '#!fake\n', mode: 0o755 },
      ]),
      'gzip',
    );
    layout.tag(layout.image([l], { config: { Cmd: ['/bin/sh'], WorkingDir: '/root' } }), 'v1');
    reg = await TestRegistry.start({ auth: 'htpasswd', users: { bob: 'b0b-pass' } });
    await reg.push(join(work, 'oci'), 'v1', 'demo/app:v1');
    writeFileSync(
      join(work, 'rootfs.tar'),
      makeTar([
        { path: 'etc/', type: 'dir' },
        { path: 'etc/hostname', data: 'imported\n' },
      ]),
    );
    const ns = createNetns('icli');
    await exposeInNetns(ns, reg.port);
    daemon = new TestDaemon({ netns: ns });
    await daemon.start();
  },
  { timeout: 900_000 },
);

after(
  async () => {
    await daemon?.cleanup();
    cleanupAll();
    await reg?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  },
  { timeout: 120_000 },
);

test('registry login (wrong then right password), image pull, list, show --json, rm', { skip }, async () => {
  const ref = `${reg.host}/demo/app:v1`;
  const denied = await daemon.cli(['image', 'pull', ref]);
  assert.equal(denied.code, 1);
  assert.match(denied.stderr, /error: .*requires a login|authentication failed/);
  assert.match(denied.stderr, /hint: run 'banger registry login/);

  const bad = await daemon.cli(['registry', 'login', reg.host, '-u', 'bob', '--password-stdin'], { input: 'nope\n' });
  assert.equal(bad.code, 1, bad.stderr);
  const ok = await daemon.cli(['registry', 'login', reg.host, '-u', 'bob', '--password-stdin'], { input: 'b0b-pass\n' });
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /login succeeded: bob @ 127\.0\.0\.1:\d+/);

  const pull = await daemon.cli(['image', 'pull', ref, '--size', '256M'], { timeoutMs: 120_000 });
  assert.equal(pull.code, 0, pull.stderr);
  assert.match(pull.stdout, /as image 'app-v1': 256\.0 MiB ext4/);
  assert.match(pull.stderr, /layer [0-9a-f]{12}: applied/, 'one progress line per stage on a non-TTY');
  assert.match(pull.stderr, /mkfs: ext4 built and checked/);

  const show = await daemon.json(['image', 'show', 'app-v1']);
  assert.equal(show.name, 'app-v1');
  assert.match(show.digest, /^sha256:[a-f0-9]{64}$/);
  assert.equal(show.sourceRef, ref);
  assert.deepEqual(show.config.cmd, ['/bin/sh']);
  assert.equal(show.config.workdir, '/root');
  assert.ok(show.rootfsPath.startsWith(daemon.root));
  assert.equal(fsck(show.rootfsPath), 0);
  assert.equal(ext4Read(show.rootfsPath, '/etc/motd').toString(), 'hello from the registry\n');

  const list = await daemon.cli(['image', 'list']);
  assert.match(list.stdout, /^NAME\s+SOURCE\s+DIGEST\s+SIZE\s+KERNEL\s+CREATED/);
  assert.match(list.stdout, /app-v1\s+127\.0\.0\.1:\d+\/demo\/app:v1\s+[0-9a-f]{12}\s+256\.0 MiB/);
  const listJson = await daemon.json(['image', 'list']);
  assert.equal(listJson.length, 1);

  // Pulling again is a registry check and a no-op (like docker pull); other settings are refused.
  const again = await daemon.cli(['image', 'pull', ref]);
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stderr, /image 'app-v1' is up to date \(sha256:/);
  const other = await daemon.cli(['image', 'pull', ref, '--size', '512M']);
  assert.equal(other.code, 1);
  assert.match(other.stderr, /image 'app-v1' already exists from 127\.0\.0\.1:\d+\/demo\/app:v1; with other settings/);
  assert.match(other.stderr, /hint: remove it first \('banger image rm app-v1'/);

  const rm = await daemon.cli(['image', 'rm', 'app-v1']);
  assert.equal(rm.code, 0, rm.stderr);
  const gone = await daemon.cli(['image', 'show', 'app-v1']);
  assert.equal(gone.code, 1);
  assert.match(gone.stderr, /image 'app-v1' not found\nhint: see 'banger image list'/);
  const prune = await daemon.json(['image', 'prune-cache']);
  assert.equal(prune.removed, 3, 'manifest + config + layer');
  const logout = await daemon.cli(['registry', 'logout', reg.host]);
  assert.equal(logout.code, 0, logout.stderr);
});

test('missing tag and bad reference: clear errors, exit 1, nothing left', { skip }, async () => {
  const missing = await daemon.cli(['--json', 'image', 'pull', `${reg.host}/demo/app:nope`]);
  assert.equal(missing.code, 1);
  const doc = JSON.parse(missing.stdout);
  assert.ok(['E_NOT_FOUND', 'E_AUTH'].includes(doc.error.code), doc.error.code);
  const badRef = await daemon.cli(['image', 'pull', 'Not/Valid']);
  assert.equal(badRef.code, 1);
  assert.match(badRef.stderr, /invalid image reference 'Not\/Valid'/);
  const badName = await daemon.cli(['image', 'pull', `${reg.host}/demo/app:v1`, '--name', '../x']);
  assert.equal(badName.code, 1);
  assert.match(badName.stderr, /invalid field 'name'/);
  const tmp = join(daemon.root, 'tmp');
  assert.deepEqual(existsSync(tmp) ? readdirSync(tmp) : [], []);
});

test('image import --rootfs-tar and --help teaches with examples', { skip }, async () => {
  const r = await daemon.cli(['image', 'import', 'imp', '--rootfs-tar', join(work, 'rootfs.tar')], { timeoutMs: 120_000 });
  assert.equal(r.code, 0, r.stderr);
  const show = await daemon.json(['image', 'show', 'imp']);
  assert.equal(show.fromRegistry, false);
  assert.equal(ext4Read(show.rootfsPath, '/etc/hostname').toString(), 'imported\n');
  const both = await daemon.cli(['image', 'import', 'x', '--rootfs-tar', '/a', '--rootfs-dir', '/b']);
  assert.equal(both.code, 1);
  assert.match(both.stderr, /exactly one of --rootfs-tar or --rootfs-dir/);
  const missing = await daemon.cli(['image', 'import', 'y', '--rootfs-dir', join(work, 'nope')]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /--rootfs-dir '.*nope' does not exist/);
  const help = await daemon.cli(['image', 'pull', '--help']);
  assert.match(help.stdout, /Examples:\n {2}banger image pull debian:bookworm/);
  assert.match(help.stdout, /--platform <os\/arch\[\/variant\]>/);
});
