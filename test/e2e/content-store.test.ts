import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { BANGER, isRoot, TestDaemon } from '../helpers/daemon.js';
import { HostileServer, type Mode } from '../helpers/hostile-http.js';
import { goodBundle, missingToolsReason, sha256 } from '../helpers/kernel-bundles.js';
import { createNetns, deleteNetns } from '../helpers/netns.js';
import { digestOf, makeTar } from '../helpers/oci.js';

/**
 * One content store for kernel bundles and image blobs, with references in SQLite:
 * `system prune` / `image prune-cache` keep what kernels and images use (a re-pull downloads
 * nothing: server requests counted); SIGKILL of bangerd during a kernel pull or an image pull
 * leaves nothing after the restart; Ctrl-C of `image pull` cancels and leaves nothing.
 */
const skip = !isRoot() ? 'needs root (network namespace)' : missingToolsReason('tar', 'zstd', 'mkfs.ext4');
const work = mkdtempSync(join(tmpdir(), 'banger-cstore-'));
const srv = new HostileServer(work);
let ns = '';
let d: TestDaemon;

const bundle = skip ? Buffer.alloc(0) : goodBundle({ withInitrd: true }).bundle;
const layer = gzipSync(
  makeTar([
    { path: 'etc/', type: 'dir' },
    { path: 'etc/hostname', data: 'cstore\n' },
  ]),
);
const cfgBlob = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: [digestOf(layer)] } }));
const manifest = Buffer.from(
  JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: digestOf(cfgBlob), size: cfgBlob.length },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: digestOf(layer), size: layer.length }],
  }),
);
const LAYER = `/v2/t/img/blobs/${digestOf(layer)}`;

// An image whose last layer is refused (absolute hard link) after its other blobs are stored:
// `preLayer` is in the store before the pull (and unreferenced), `freshLayer` is downloaded by it.
const preLayer = gzipSync(
  makeTar([
    { path: 'pre/', type: 'dir' },
    { path: 'pre/a', data: 'pre\n' },
  ]),
);
const freshLayer = gzipSync(
  makeTar([
    { path: 'fresh/', type: 'dir' },
    { path: 'fresh/b', data: 'fresh\n' },
  ]),
);
const evilLayer = gzipSync(makeTar([{ path: 'h', type: 'link', linkpath: '/etc/passwd' }]));
const badLayers = [preLayer, freshLayer, evilLayer];
const badCfg = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: badLayers.map(digestOf) } }));
const badManifest = Buffer.from(
  JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: digestOf(badCfg), size: badCfg.length },
    layers: badLayers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: digestOf(l), size: l.length })),
  }),
);
const CONFIG = `/v2/t/img/blobs/${digestOf(cfgBlob)}`;
const f = (name: string, data: Buffer | string) => {
  const p = join(work, name);
  writeFileSync(p, data);
  return p;
};

function routes(bundleMode: Mode = 'ok', layerMode: Mode = 'ok') {
  return {
    trickleMs: 50,
    routes: {
      '/catalog.json': {
        file: f(
          'catalog.json',
          JSON.stringify({
            version: 1,
            entries: [
              {
                name: 'sk',
                distro: 'test',
                arch: 'x86_64',
                kernelVersion: '6.1.0-test',
                tarballUrl: '/bundle.tar.zst',
                tarballSha256: sha256(bundle),
                sizeBytes: bundle.length,
              },
            ],
          }),
        ),
        mode: 'ok' as Mode,
      },
      '/bundle.tar.zst': { file: f('bundle.tar.zst', bundle), mode: bundleMode },
      '/v2/': { file: f('v2.json', '{}'), mode: 'ok' as Mode },
      '/v2/t/img/manifests/v1': {
        file: f('manifest.json', manifest),
        mode: 'ok' as Mode,
        headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' },
      },
      [CONFIG]: { file: f('config.json', cfgBlob), mode: 'ok' as Mode },
      [LAYER]: { file: f('layer.tar.gz', layer), mode: layerMode },
      '/v2/t/bad/manifests/v1': {
        file: f('bad-manifest.json', badManifest),
        mode: 'ok' as Mode,
        headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' },
      },
      [`/v2/t/bad/blobs/${digestOf(badCfg)}`]: { file: f('bad-config.json', badCfg), mode: 'ok' as Mode },
      ...Object.fromEntries(badLayers.map((l, i) => [`/v2/t/bad/blobs/${digestOf(l)}`, { file: f(`bad-layer-${i}.tar.gz`, l), mode: 'ok' as Mode }])),
    },
  };
}

before(async () => {
  if (skip) return;
  ns = createNetns('cstore');
  srv.set(routes());
  await srv.start(ns);
  d = new TestDaemon({
    netns: ns,
    env: { BANGER_KERNEL_CATALOGS: srv.url('/catalog.json') },
    config: { imageStaging: 'disk', http: { idleTimeoutSeconds: 30, downloadDeadlineSeconds: 120 } },
  });
  await d.start();
});

after(async () => {
  await d?.cleanup();
  await srv.stop();
  if (ns) deleteNetns(ns);
  rmSync(work, { recursive: true, force: true });
});

const ref = () => `127.0.0.1:${srv.port}/t/img:v1`;
const blobs = () => (existsSync(join(d.root, 'blobs', 'sha256')) ? readdirSync(join(d.root, 'blobs', 'sha256')) : []);

async function until(what: string, cond: () => boolean, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Nothing of a dead or cancelled operation: tmp/ empty, no blob temp file, no row, no directory. */
async function assertNothingLeft(what: string): Promise<void> {
  // hostkey-* is the new daemon's SSH host-key pool filling at start (vms), not debris of the pull.
  assert.deepEqual(
    readdirSync(join(d.root, 'tmp')).filter((n) => !n.startsWith('hostkey-')),
    [],
    `${what}: tmp/`,
  );
  assert.deepEqual(
    blobs().filter((n) => n.endsWith('.tmp')),
    [],
    `${what}: blob temp files`,
  );
  assert.deepEqual(readdirSync(join(d.root, 'kernels')), [], `${what}: kernels/`);
  assert.deepEqual(readdirSync(join(d.root, 'images')), [], `${what}: images/`);
  const k = await d.json(['kernel', 'list']);
  assert.deepEqual(k.kernels ?? k, [], `${what}: kernel rows`);
  const i = await d.json(['image', 'list']);
  assert.deepEqual(i.images ?? i, [], `${what}: image rows`);
}

test('prune keeps what kernels and images reference: both pull again from the cache (no download)', { skip, timeout: 120_000 }, async () => {
  srv.set(routes());
  await d.json(['kernel', 'pull', 'sk']);
  await d.json(['image', 'pull', ref(), '--name', 'one']);
  const bundleHex = sha256(bundle);
  assert.ok(blobs().includes(bundleHex), 'bundle in the store');
  for (const cmd of [
    ['system', 'prune'],
    ['image', 'prune-cache'],
  ]) {
    const r = await d.json(cmd);
    assert.equal(r.removed, 0, `${cmd.join(' ')} removes nothing referenced`);
  }
  assert.ok(blobs().includes(bundleHex), 'bundle kept by prune');
  assert.ok(blobs().includes(digestOf(layer).slice(7)), 'layer kept by prune');
  assert.ok(blobs().includes(digestOf(manifest).slice(7)), 'the manifest is in the store and kept by prune');
  const bundleGets = srv.count('/bundle.tar.zst');
  const blobGets = srv.count('/v2/t/img/blobs/', true);
  const k = await d.json(['kernel', 'pull', 'sk', '--force']);
  assert.equal(k.download, 'cached');
  await d.json(['image', 'pull', ref(), '--name', 'two', '--size', '1100M']);
  assert.equal(srv.count('/bundle.tar.zst'), bundleGets, 'kernel re-pull: no bundle request');
  assert.equal(srv.count('/v2/t/img/blobs/', true), blobGets, 'image re-pull: no blob request');
  // By digest, the manifest comes from the store too: the server has no route for it (404).
  const manifestGets = srv.count('/v2/t/img/manifests/', true);
  await d.json(['image', 'pull', `127.0.0.1:${srv.port}/t/img@${digestOf(manifest)}`, '--name', 'three', '--size', '1200M']);
  assert.equal(srv.count('/v2/t/img/manifests/', true), manifestGets, 'pull by digest: no manifest request');
  assert.equal(srv.count('/v2/t/img/blobs/', true), blobGets, 'pull by digest: no blob request');
  await d.json(['image', 'rm', 'three']);

  // Once nothing references them, prune frees them.
  await d.json(['kernel', 'rm', 'sk']);
  await d.json(['image', 'rm', 'one']);
  await d.json(['image', 'rm', 'two']);
  const r = await d.json(['system', 'prune']);
  assert.equal(r.removed, 4, 'bundle, manifest, config and layer freed');
  assert.deepEqual(blobs(), []);
});

test('a failed image pull removes the blobs it added, and only those (checked at once)', { skip, timeout: 120_000 }, async () => {
  srv.set(routes());
  await d.json(['image', 'pull', ref(), '--name', 'keep']); // its manifest, config and layer are referenced
  const dir = join(d.root, 'blobs', 'sha256');
  writeFileSync(join(dir, digestOf(preLayer).slice(7)), preLayer); // there before the pull, unreferenced
  const before = blobs().sort();
  assert.equal(before.length, 4);
  try {
    const r = await d.cli(['--json', 'image', 'pull', `127.0.0.1:${srv.port}/t/bad:v1`, '--name', 'bad']);
    assert.notEqual(r.code, 0);
    const err = JSON.parse(r.stdout).error;
    assert.equal(err.code, 'E_UNSAFE_ENTRY', r.stdout);
    assert.match(err.message, /absolute hard link target/);
    // Right after the error, without waiting: the pull downloaded its manifest, config, fresh and
    // evil layers (all verified) and none is left; what was there before is untouched.
    assert.ok(
      srv.count(`/v2/t/bad/blobs/${digestOf(freshLayer)}`) > 0 && srv.count(`/v2/t/bad/blobs/${digestOf(evilLayer)}`) > 0,
      'precondition: both layers were downloaded',
    );
    assert.deepEqual(blobs().sort(), before, 'the store holds exactly what it held before the pull');
    assert.deepEqual(
      readdirSync(join(d.root, 'tmp')).filter((n) => !n.startsWith('hostkey-')),
      [],
      'tmp/',
    );
    assert.deepEqual(readdirSync(join(d.root, 'images')), ['keep']);
    const il = await d.json(['image', 'list']);
    assert.deepEqual(
      (il.images ?? il).map((i: { name: string }) => i.name),
      ['keep'],
      'image rows',
    );
  } finally {
    await d.cli(['image', 'rm', 'keep']);
  }
  const p = await d.json(['system', 'prune']);
  assert.equal(p.removed, 4, "prune frees the unreferenced blobs: keep's 3 and the one placed before");
  assert.deepEqual(blobs(), []);
});

for (const kind of ['kernel', 'image'] as const) {
  test(`SIGKILL of bangerd during a ${kind} pull: after the restart nothing of it is left`, { skip, timeout: 120_000 }, async () => {
    srv.set(kind === 'kernel' ? routes('trickle') : routes('ok', 'trickle'));
    const args = kind === 'kernel' ? ['kernel', 'pull', 'sk'] : ['image', 'pull', ref(), '--name', 'killed'];
    const cli = d.cli(args);
    await until('a blob temp file', () => blobs().some((n) => n.endsWith('.tmp')) && readdirSync(join(d.root, 'tmp')).length > 0);
    if (kind === 'image')
      assert.ok(
        blobs().includes(digestOf(manifest).slice(7)) && blobs().includes(digestOf(cfgBlob).slice(7)),
        'precondition: manifest and config stored before the kill',
      );
    await d.kill();
    assert.notEqual((await cli).code, 0);
    assert.ok(
      blobs().some((n) => n.endsWith('.tmp')),
      'the crash left a temp file (precondition)',
    );
    await d.start();
    await assertNothingLeft(`after SIGKILL during ${kind} pull`);
    // The image pull had stored its manifest and config before it was killed: the journal of
    // the dead pull (cache refs `pull:<id>`) lets the reconcile remove them.
    assert.deepEqual(blobs(), [], 'nothing of the dead pull in the store');
    if (kind === 'image')
      assert.ok(/"removedPullBlobs":[1-9]/.test(readFileSync(join(d.root, 'logs', 'bangerd.log'), 'utf8')), "the reconcile removed the dead pull's blobs");
  });
}

test('Ctrl-C (SIGINT) of the CLI during image pull: cancelled, nothing left when it exits', { skip, timeout: 60_000 }, async () => {
  srv.set(routes('ok', 'trickle'));
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, BANGER, '--json', 'image', 'pull', ref(), '--name', 'cancelled'], {
    env: d.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (x) => (out += x));
  const exited = new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  await until('the layer download', () => blobs().some((n) => n.endsWith('.tmp')));
  child.kill('SIGINT');
  const code = await exited;
  assert.notEqual(code, 0);
  assert.equal(JSON.parse(out).error.code, 'E_CANCELLED');
  await assertNothingLeft('after Ctrl-C');
  await d.cli(['system', 'prune']);
});
