import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TestDaemon, isRoot, missingTools } from '../helpers/daemon.js';
import { cleanupAll, createNetns } from '../helpers/netns.js';
import { OciLayout, makeTar } from '../helpers/oci.js';
import { TestRegistry } from '../helpers/registry.js';
import { Canary } from '../helpers/canary.js';
import { reportedAttack, scenario } from '../helpers/hostile.js';

/**
 * The CLI → bangerd path for hostile archives: `banger image import NAME --rootfs-tar FILE`,
 * and `banger image pull` from a real docker-registry, against a daemon in its own network
 * namespace (the registry runs in the same namespace) and state root. The reported attack (FIFO
 * 04777 owner 4242 with a capability, a char device, 1700 directories, then `d` → a host
 * directory) and a generated archive that writes through a swapped parent: the first imports
 * as a harmless symlink, the second is refused with E_UNSAFE_ENTRY naming the entry; the host
 * directory (a canary with known owners, modes, times and xattrs) is unchanged either way and
 * a failed import leaves nothing in the root's tmp/ or images/.
 */
const skip = !isRoot() ? 'needs root' : missingTools('mkfs.ext4', 'e2fsck', 'setfattr', 'getfattr', 'ip', 'docker-registry', 'skopeo', 'curl');

let work: string;
let daemon: TestDaemon;
let reg: TestRegistry;
let canary: Canary;
let baseline: string[];
const REFUSED_SEED = 9; // one layer; entries under the swapped ancestor follow the swap

before(async () => {
  if (skip) return;
  work = mkdtempSync(join(tmpdir(), 'banger-hostile-cli-'));
  canary = new Canary('canary-cli');
  baseline = canary.snapshot();
  writeFileSync(join(work, 'attack.tar'), makeTar(reportedAttack(canary.dir)));
  writeFileSync(join(work, 'attack-compact.tar'), makeTar(reportedAttack(canary.dir, 20)));
  const sc = scenario(REFUSED_SEED, canary.dir);
  assert.ok(sc.mustRefuse && sc.layers.length === 1, sc.name);
  writeFileSync(join(work, 'refused.tar'), makeTar(sc.layers[0]!));
  const ns = createNetns('hostile');
  daemon = new TestDaemon({ netns: ns });
  await daemon.start();
  // the registry runs in the daemon's namespace, so the daemon's pull stays inside it
  const layout = new OciLayout(join(work, 'oci'));
  layout.tag(layout.image([layout.layer(makeTar(reportedAttack(canary.dir, 20)), 'gzip')]), 'attack');
  layout.tag(layout.image(sc.layers.map((l) => layout.layer(makeTar(l), 'gzip'))), 'refused');
  reg = await TestRegistry.start({ netns: ns });
  await reg.push(join(work, 'oci'), 'attack', 't/hostile:attack');
  await reg.push(join(work, 'oci'), 'refused', 't/hostile:refused');
});

after(async () => {
  await daemon?.cleanup();
  await reg?.stop();
  cleanupAll();
  canary?.remove();
  if (work) rmSync(work, { recursive: true, force: true });
});

test('image import --rootfs-tar of the reported attack: imported as a symlink, the host directory untouched', { skip }, async () => {
  for (const t of ['attack', 'attack-compact']) {
    const r = await daemon.cli(['image', 'import', t, '--rootfs-tar', join(work, `${t}.tar`)], { timeoutMs: 180_000 });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(canary.snapshot(), baseline, `canary changed by ${t}`);
  }
});

test('image import --rootfs-tar of an archive writing through a swapped parent: E_UNSAFE_ENTRY naming the entry, nothing left, host untouched', {
  skip,
}, async () => {
  const r = await daemon.cli(['--json', 'image', 'import', 'refused', '--rootfs-tar', join(work, 'refused.tar')], { timeoutMs: 180_000 });
  assert.equal(r.code, 1, r.stderr);
  const err = (JSON.parse(r.stdout) as { error: { code: string; message: string } }).error;
  assert.equal(err.code, 'E_UNSAFE_ENTRY');
  assert.match(err.message, /image refused: step layers: --rootfs-tar \/.*\/refused\.tar: entry 'a\/[^']+' would be written through the symlink 'a'/);
  assert.deepEqual(canary.snapshot(), baseline, 'canary changed');
  const ls = (d: string) => (existsSync(d) ? readdirSync(d) : []);
  assert.deepEqual(ls(join(daemon.root, 'tmp')), []);
  assert.ok(!ls(join(daemon.root, 'images')).includes('refused'));
});

test('image pull (daemon and registry in one netns) of the reported attack and of a refused archive: host directory untouched', { skip }, async () => {
  const ok = await daemon.cli(['image', 'pull', `${reg.host}/t/hostile:attack`, '--name', 'pulled-attack'], { timeoutMs: 180_000 });
  assert.equal(ok.code, 0, ok.stderr);
  assert.deepEqual(canary.snapshot(), baseline, 'canary changed by the pulled attack');
  const r = await daemon.cli(['--json', 'image', 'pull', `${reg.host}/t/hostile:refused`, '--name', 'pulled-refused'], { timeoutMs: 180_000 });
  assert.equal(r.code, 1, r.stderr);
  const err = (JSON.parse(r.stdout) as { error: { code: string; message: string } }).error;
  assert.equal(err.code, 'E_UNSAFE_ENTRY');
  assert.match(err.message, /layer sha256:[0-9a-f]{12}: entry 'a\/[^']+' would be written through the symlink 'a'/);
  assert.deepEqual(canary.snapshot(), baseline, 'canary changed by the refused pull');
  assert.deepEqual(existsSync(join(daemon.root, 'tmp')) ? readdirSync(join(daemon.root, 'tmp')) : [], []);
});
