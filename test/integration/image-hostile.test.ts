import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isBangerError } from '../../src/core/errors.js';
import { isRoot, missingTools } from '../helpers/daemon.js';
import { FakeRegistry } from '../helpers/fake-registry.js';
import { TestRegistry } from '../helpers/registry.js';
import { OciLayout, makeTar, type Descriptor, type TEntry } from '../helpers/oci.js';
import { imageService, leftovers } from '../helpers/image-context.js';
import { Canary } from '../helpers/canary.js';
import { reportedAttack, scenario } from '../helpers/hostile.js';

/**
 * Hostile images through `image pull` (in-process ImageService; a real docker-registry on
 * 127.0.0.1, and a fake one for what a real registry will not serve): symlink-swap attacks
 * on devices, FIFOs, hard links, whiteouts and xattrs, whiteouts under symlinked parents,
 * invalid whiteout names, escaping hard links, size limits, digest mismatches and a damaged
 * cached layer. Every case: a clear error (or a contained success), nothing left behind, and
 * a canary directory outside the root whose owners, modes, times, xattrs and entries are
 * unchanged. The CLI/daemon path (`image import --rootfs-tar`) is in image-hostile-daemon.
 */
const skip = !isRoot() ? 'needs root (chown, mknod)' : missingTools('docker-registry', 'skopeo', 'mkfs.ext4', 'e2fsck', 'setfattr', 'getfattr');

let work: string;
let layout: OciLayout;
let fake: FakeRegistry;
let reg: TestRegistry;
/** One canary per test group, so a failure in one group cannot mask or fake another's. */
let canary: Canary;
let baseline: string[];
let attackCanary: Canary;
let attackBaseline: string[];
let seedCanary: Canary;
let seedBaseline: string[];
let goodLayer: Descriptor;
let goodConfig: string;
let goodManifest: Descriptor;
const SEEDS = [2, 5, 6, 9, 12, 24];

before(async () => {
  if (skip) return;
  work = mkdtempSync(join(tmpdir(), 'banger-hostile-img-'));
  canary = new Canary();
  baseline = canary.snapshot();
  attackCanary = new Canary('canary-attack');
  attackBaseline = attackCanary.snapshot();
  seedCanary = new Canary('canary-seeds');
  seedBaseline = seedCanary.snapshot();
  layout = new OciLayout(join(work, 'oci'));
  const tag = (name: string, layers: TEntry[][]) => layout.tag(layout.image(layers.map((l) => layout.layer(makeTar(l), 'gzip'))), name);
  goodLayer = layout.layer(
    makeTar([
      { path: 'etc/', type: 'dir' },
      { path: 'etc/os-release', data: 'ID=test\n' },
    ]),
    'gzip',
  );
  goodManifest = layout.image([goodLayer]);
  goodConfig = (JSON.parse(readFileSync(join(work, 'oci', 'blobs', 'sha256', goodManifest.digest.slice(7)), 'utf8')) as { config: { digest: string } }).config
    .digest;
  layout.tag(goodManifest, 'good');
  const c = canary.dir;
  tag('attack', [reportedAttack(attackCanary.dir)]);
  tag('attack-compact', [reportedAttack(attackCanary.dir, 20)]);
  for (const s of SEEDS) tag(`seed-${s}`, scenario(s, seedCanary.dir).layers);
  tag('wh-symlink', [[{ path: 'evil', type: 'symlink', linkpath: c }, { path: 'evil/.wh.passwd' }]]);
  tag('wh-symlink-later', [[{ path: 'evil', type: 'symlink', linkpath: c }], [{ path: 'evil/.wh.passwd' }]]);
  tag('opq-symlink', [[{ path: 'evil', type: 'symlink', linkpath: c }, { path: 'evil/.wh..wh..opq' }]]);
  tag('wh-empty', [[{ path: 'd/', type: 'dir' }, { path: 'd/.wh.' }]]);
  tag('wh-dotdot', [[{ path: 'd/', type: 'dir' }, { path: 'd/.wh..' }]]);
  tag('wh-meta', [[{ path: 'd/', type: 'dir' }, { path: 'd/.wh..wh.x' }]]);
  tag('hl-absolute', [[{ path: 'h', type: 'link', linkpath: `${c}/passwd` }]]);
  tag('hl-symlinked', [
    [
      { path: 'evil', type: 'symlink', linkpath: c },
      { path: 'h', type: 'link', linkpath: 'evil/passwd' },
    ],
  ]);
  tag('hl-symlinked-deep', [
    [
      { path: 'a/', type: 'dir' },
      { path: 'a/evil', type: 'symlink', linkpath: '../../../../../../../../..' + c },
      { path: 'h', type: 'link', linkpath: 'a/evil/sub/inner' },
    ],
  ]);
  tag('many-entries', [Array.from({ length: 60 }, (_, i) => ({ path: `f${i}`, data: 'x' }))]);
  tag('big-file', [[{ path: 'big', data: Buffer.alloc(64 * 1024, 1) }]]);
  fake = await new FakeRegistry(join(work, 'oci')).start();
  reg = await TestRegistry.start();
  await reg.push(join(work, 'oci'), 'attack', 't/hostile:attack');
  await reg.push(join(work, 'oci'), 'attack-compact', 't/hostile:attack-compact');
  for (const s of SEEDS) await reg.push(join(work, 'oci'), `seed-${s}`, `t/hostile:seed-${s}`);
});

after(async () => {
  await fake?.stop();
  await reg?.stop();
  for (const c of [canary, attackCanary, seedCanary]) c?.remove();
  if (work) rmSync(work, { recursive: true, force: true });
});

function untouched(what: string, c = canary, base = baseline): void {
  assert.deepEqual(c.snapshot(), base, `canary outside the root changed by ${what}`);
}

async function expectFailure(ref: string, code: string, re: RegExp, cfg: Record<string, unknown> = {}): Promise<void> {
  const { svc, ctx, cleanup } = imageService(cfg);
  try {
    await assert.rejects(svc.pull({ ref }), (e: unknown) => {
      assert.ok(isBangerError(e), String(e));
      assert.equal(e.code, code, e.message);
      assert.match(e.message, re);
      return true;
    });
    assert.deepEqual(leftovers(ctx), [], 'nothing left behind');
    untouched(ref);
  } finally {
    cleanup();
  }
}

test('real registry: the reported attack (FIFO 04777/4242 + capability, device, 1700 dirs or 20, d -> host dir) pulls as a harmless symlink; the host dir is untouched', {
  skip,
}, async () => {
  for (const t of ['attack', 'attack-compact']) {
    const { svc, cleanup } = imageService();
    try {
      const rec = await svc.pull({ ref: `${reg.host}/t/hostile:${t}`, name: t });
      assert.equal(rec.name, t);
      untouched(`the reported attack (${t})`, attackCanary, attackBaseline);
    } finally {
      cleanup();
    }
  }
});

test('real registry: generated symlink-swap images are refused (E_UNSAFE_ENTRY) or contained; the canary is untouched', { skip }, async () => {
  let refused = 0;
  for (const s of SEEDS) {
    const sc = scenario(s, seedCanary.dir);
    const { svc, ctx, cleanup } = imageService();
    try {
      const r = await svc.pull({ ref: `${reg.host}/t/hostile:seed-${s}`, name: `seed-${s}` }).then(
        () => undefined,
        (e: unknown) => e,
      );
      if (sc.mustRefuse) {
        assert.ok(isBangerError(r, 'E_UNSAFE_ENTRY'), `${sc.name}: ${String(r)}`);
        assert.match(r.message, /layer sha256:[0-9a-f]{12}.*entry 'a[^']*' would be written through the symlink 'a/);
        assert.deepEqual(leftovers(ctx), []);
        refused++;
      } else assert.equal(r, undefined, `${sc.name}: ${String(r)}`);
      untouched(sc.name, seedCanary, seedBaseline);
    } finally {
      cleanup();
    }
  }
  assert.ok(refused >= 2 && refused < SEEDS.length, `both outcomes exercised (${refused} refused)`);
});

for (const [tag, re] of [
  ['wh-symlink', /entry 'evil\/\.wh\.passwd' would be written through the symlink 'evil'/],
  ['wh-symlink-later', /entry 'evil\/\.wh\.passwd' would be written through the symlink 'evil'/],
  ['opq-symlink', /entry 'evil\/\.wh\.\.wh\.\.opq' would be written through the symlink 'evil'/],
  ['wh-empty', /entry 'd\/\.wh\.' is a whiteout of an invalid name ''/],
  ['wh-dotdot', /entry 'd\/\.wh\.\.' is a whiteout of an invalid name '\.'/],
  ['wh-meta', /entry 'd\/\.wh\.\.wh\.x' is a whiteout of an invalid name '\.wh\.x'/],
  ['hl-absolute', /entry 'h' has an absolute hard link target '\/tmp\/banger-canary-/],
  ['hl-symlinked', /entry 'h' has a hard link target 'evil\/passwd' that passes through the symlink 'evil'/],
  ['hl-symlinked-deep', /entry 'h' has a hard link target 'a\/evil\/sub\/inner' that passes through the symlink 'a\/evil'/],
] as const) {
  test(`hostile layer (${tag}) is refused naming the entry and layer; nothing written outside`, { skip }, async () => {
    await expectFailure(`${fake.host}/t/img:${tag}`, 'E_UNSAFE_ENTRY', new RegExp(`layer sha256:[a-f0-9]{12}.*${re.source}`));
  });
}

test('a layer past imageLimits.maxEntries / maxBytes is E_TOO_LARGE naming the entry and the config key', { skip }, async () => {
  await expectFailure(`${fake.host}/t/img:many-entries`, 'E_TOO_LARGE', /entry 'f50' is past the limit of 50 entries/, { imageLimits: { maxEntries: 50 } });
  await expectFailure(`${fake.host}/t/img:big-file`, 'E_TOO_LARGE', /entry 'big' \(65536 bytes\) would take the image past the limit of 10000 bytes/, {
    imageLimits: { maxBytes: 10_000 },
  });
  const { svc, cleanup } = imageService({ imageLimits: { maxBytes: 10_000 } });
  try {
    await assert.rejects(
      svc.pull({ ref: `${fake.host}/t/img:big-file` }),
      (e: unknown) => isBangerError(e, 'E_TOO_LARGE') && /imageLimits\.maxBytes/.test(e.hint ?? ''),
    );
  } finally {
    cleanup();
  }
  // the defaults let both through
  const d = imageService();
  try {
    await d.svc.pull({ ref: `${fake.host}/t/img:many-entries`, name: 'many' });
  } finally {
    d.cleanup();
  }
});

test('a manifest whose bytes do not match the digest asked for (or announced) is E_DIGEST', { skip }, async () => {
  const body = readFileSync(join(work, 'oci', 'blobs', 'sha256', goodManifest.digest.slice(7)));
  const forged = Buffer.from(body.toString('utf8') + ' ');
  fake.hooks.intercept = (_q, res, kind, ref) => {
    if (kind !== 'manifest') return false;
    res.writeHead(200, { 'content-type': goodManifest.mediaType, 'docker-content-digest': goodManifest.digest, 'content-length': forged.length }).end(forged);
    return true;
  };
  try {
    await expectFailure(`${fake.host}/t/img@${goodManifest.digest}`, 'E_DIGEST', /manifest .*digest mismatch: expected sha256:/);
    await expectFailure(`${fake.host}/t/img:good`, 'E_DIGEST', /manifest .*digest mismatch: expected sha256:/);
  } finally {
    fake.hooks = {};
  }
});

test('a config blob whose bytes do not match its digest is E_DIGEST', { skip }, async () => {
  fake.hooks.intercept = (_q, res, kind, ref) => {
    if (kind !== 'blob' || ref !== goodConfig) return false;
    const data = Buffer.from(readFileSync(join(work, 'oci', 'blobs', 'sha256', ref.slice(7))));
    data[data.length - 2] ^= 0x01;
    res.writeHead(200, { 'content-length': data.length }).end(data);
    return true;
  };
  try {
    await expectFailure(`${fake.host}/t/img:good`, 'E_DIGEST', new RegExp(`blob ${goodConfig}: digest mismatch`));
  } finally {
    fake.hooks = {};
  }
});

test('a damaged layer in the content store is detected, never applied, and downloaded again', { skip }, async () => {
  const { svc, ctx, cleanup } = imageService();
  try {
    await svc.pull({ ref: `${fake.host}/t/img:good`, name: 'first' });
    const stored = svc.store.path(goodLayer.digest);
    const data = readFileSync(stored);
    data[20] ^= 0xff;
    writeFileSync(stored, data);
    const before = fake.count('blob', goodLayer.digest);
    const stages: string[] = [];
    const rec = await svc.pull({ ref: `${fake.host}/t/img:good`, name: 'second', reuse: false }, { progress: (ev) => ev.message && stages.push(ev.message) });
    assert.equal(rec.name, 'second');
    assert.equal(fake.count('blob', goodLayer.digest), before + 1, 'downloaded again');
    assert.ok(stages.includes('cached copy damaged: downloading again'), stages.join(' | '));
    assert.ok(
      readFileSync(stored).equals(readFileSync(join(work, 'oci', 'blobs', 'sha256', goodLayer.digest.slice(7)))),
      'the store holds the good blob again',
    );
    await svc.settled();
    assert.deepEqual(
      leftovers(ctx).filter((l) => !l.startsWith('images/') && !l.startsWith('row:')),
      [],
    );
  } finally {
    cleanup();
  }
});
