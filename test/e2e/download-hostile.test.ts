import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { isRoot, TestDaemon, type CliResult } from '../helpers/daemon.js';
import { debianMirrorUnavailable, startDebianMirror, type DebianMirror } from '../helpers/debian-mirror.js';
import { HOSTILE_MODES, HostileServer, type Mode } from '../helpers/hostile-http.js';
import { goodBundle, missingToolsReason, sha256 } from '../helpers/kernel-bundles.js';
import { createNetns, deleteNetns } from '../helpers/netns.js';
import { digestOf, makeTar } from '../helpers/oci.js';

/**
 * Every download path against a hostile HTTP server on 127.0.0.1 inside the daemon's own network
 * namespace: FIN or RST mid-body, no response headers, a trickle below the idle timeout, huge
 * headers, bodies longer and shorter than their Content-Length. After each failed command the
 * daemon still answers (same pid) and nothing of the operation is left: tmp/ is empty, no blob
 * temp file, no kernel or image row. Checked right after the CLI exits, without sleeping.
 */
const skip = !isRoot() ? 'needs root (network namespace)' : missingToolsReason('tar', 'zstd', 'mkfs.ext4');
const debSkip = skip ?? debianMirrorUnavailable();
const work = mkdtempSync(join(tmpdir(), 'banger-hostile-'));
const srv = new HostileServer(work);
let ns = '';
let d: TestDaemon;
let pid = 0;
let mirror: DebianMirror | undefined;

const bundle = skip ? Buffer.alloc(0) : goodBundle({ withInitrd: true }).bundle;
const file = (name: string, data: Buffer | string) => {
  const p = join(work, name);
  writeFileSync(p, data);
  return p;
};

// A one-layer OCI image served as a registry (repository t/img, tag v1).
const layer = gzipSync(
  makeTar([
    { path: 'etc/', type: 'dir' },
    { path: 'etc/hostname', data: 'hostile\n' },
    { path: 'big', data: Buffer.alloc(300 * 1024, 7) },
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
const MANIFEST = '/v2/t/img/manifests/v1';
const LAYER = `/v2/t/img/blobs/${digestOf(layer)}`;
const CONFIG = `/v2/t/img/blobs/${digestOf(cfgBlob)}`;

function baseRoutes(): Record<string, { file: string; mode: Mode; headers?: Record<string, string> }> {
  return {
    '/catalog.json': {
      file: file(
        'catalog.json',
        JSON.stringify({
          version: 1,
          entries: [
            {
              name: 'hk',
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
      mode: 'ok',
    },
    '/cat2.json': {
      file: file(
        'cat2.json',
        JSON.stringify({
          version: 1,
          entries: [
            {
              name: 'ck',
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
      mode: 'ok',
    },
    '/bundle.tar.zst': { file: file('bundle.tar.zst', bundle), mode: 'ok' },
    '/v2/': { file: file('v2.json', '{}'), mode: 'ok' },
    [MANIFEST]: { file: file('manifest.json', manifest), mode: 'ok', headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' } },
    [CONFIG]: { file: file('config.json', cfgBlob), mode: 'ok' },
    [LAYER]: { file: file('layer.tar.gz', layer), mode: 'ok' },
  };
}

before(async () => {
  if (skip) return;
  ns = createNetns('hostile');
  if (!debSkip) mirror = await startDebianMirror();
  srv.set({ routes: baseRoutes(), dir: mirror?.root, trickleMs: 400 });
  await srv.start(ns);
  d = new TestDaemon({
    netns: ns,
    config: {
      http: { connectTimeoutSeconds: 2, headersTimeoutSeconds: 2, idleTimeoutSeconds: 2, documentDeadlineSeconds: 4, downloadDeadlineSeconds: 4 },
      debianMirror: srv.url(''),
      imageStaging: 'disk',
    },
  });
  await d.start();
  pid = (await d.json(['daemon', 'status'])).pid;
});

after(async () => {
  await d?.cleanup();
  await srv.stop();
  await mirror?.close();
  if (ns) deleteNetns(ns);
  rmSync(work, { recursive: true, force: true });
});

/** Nothing of a failed operation is left, and the same daemon answers. */
async function assertClean(what: string): Promise<void> {
  const tmp = readdirSync(join(d.root, 'tmp'));
  const stored = existsSync(join(d.root, 'blobs', 'sha256')) ? readdirSync(join(d.root, 'blobs', 'sha256')) : [];
  assert.deepEqual(tmp, [], `${what}: tmp/ is empty right after the error`);
  assert.deepEqual(
    stored.filter((n) => n.endsWith('.tmp')),
    [],
    `${what}: no blob temp files`,
  );
  // Every case starts with an empty store: a failed pull removes the blobs it added (manifest,
  // config, layers that verified, .debs), so the store is empty again right after the error.
  assert.deepEqual(stored, [], `${what}: nothing of the failed pull in the content store`);
  assert.deepEqual(readdirSync(join(d.root, 'kernels')), [], `${what}: no kernel directory`);
  assert.deepEqual(readdirSync(join(d.root, 'images')), [], `${what}: no image directory`);
  const st = await d.json(['daemon', 'status']);
  assert.equal(st.pid, pid, `${what}: the daemon survived (same pid)`);
  const kernels = await d.json(['kernel', 'list']);
  assert.deepEqual(kernels.kernels ?? kernels, [], `${what}: no kernel row`);
  const images = await d.json(['image', 'list']);
  assert.deepEqual(images.images ?? images, [], `${what}: no image row`);
}

function errorOf(r: CliResult): { code: string; message: string } {
  try {
    return JSON.parse(r.stdout).error ?? { code: 'none', message: r.stdout };
  } catch {
    return { code: 'unparsed', message: r.stdout + r.stderr };
  }
}

/**
 * The one outcome each mode must produce. long-body is the right file followed by junk past its
 * Content-Length: the client reads exactly Content-Length bytes, so the pull succeeds.
 */
function checkError(mode: Mode, r: CliResult, what: string): void {
  if (mode === 'long-body') {
    assert.equal(r.code, 0, `${what}: the bytes past Content-Length must be ignored, not fail the pull: ${r.stdout}${r.stderr}`);
    return;
  }
  assert.notEqual(r.code, 0, `${what}: must fail`);
  const e = errorOf(r);
  if (mode === 'no-headers' || mode === 'trickle') {
    assert.equal(e.code, 'E_TIMEOUT', `${what}: ${e.message}`);
    if (mode === 'trickle') assert.match(e.message, /deadline/, what);
    if (mode === 'no-headers') assert.match(e.message, /no response headers|deadline/, what);
  } else assert.ok(['E_HTTP', 'E_DIGEST', 'E_REGISTRY', 'E_BUNDLE'].includes(e.code), `${what}: ${e.code} ${e.message}`);
}

async function cleanupSuccess(kind: 'kernel' | 'image', name: string): Promise<void> {
  await d.cli([kind, 'rm', name]);
  await d.cli(['image', 'prune-cache']);
}

for (const mode of HOSTILE_MODES) {
  test(`kernel bundle download, server ${mode}: clear error, daemon alive, nothing left`, { skip, timeout: 60_000 }, async () => {
    srv.set({ routes: { ...baseRoutes(), '/bundle.tar.zst': { file: join(work, 'bundle.tar.zst'), mode } }, dir: mirror?.root, trickleMs: 400 });
    const r = await d.cli(['--json', 'kernel', 'pull', 'hk'], { env: { BANGER_KERNEL_CATALOGS: srv.url('/catalog.json') } });
    checkError(mode, r, `bundle ${mode}`);
    if (r.code === 0) await cleanupSuccess('kernel', 'hk');
    await assertClean(`bundle ${mode}`);
  });

  test(`remote kernel catalog, server ${mode}: clear error, daemon alive, nothing left`, { skip, timeout: 60_000 }, async () => {
    srv.set({ routes: { ...baseRoutes(), '/cat2.json': { file: join(work, 'cat2.json'), mode } }, dir: mirror?.root, trickleMs: 400 });
    const r = await d.cli(['--json', 'kernel', 'pull', 'ck'], { env: { BANGER_KERNEL_CATALOGS: srv.url('/cat2.json') } });
    checkError(mode, r, `catalog ${mode}`);
    if (r.code === 0) await cleanupSuccess('kernel', 'ck');
    await assertClean(`catalog ${mode}`);
  });

  for (const [label, path] of [
    ['manifest', MANIFEST],
    ['layer blob', LAYER],
  ] as const) {
    test(`registry ${label}, server ${mode}: clear error, daemon alive, nothing left`, { skip, timeout: 90_000 }, async () => {
      srv.set({ routes: { ...baseRoutes(), [path]: { ...baseRoutes()[path]!, mode } }, dir: mirror?.root, trickleMs: 400 });
      const r = await d.cli(['--json', 'image', 'pull', `127.0.0.1:${srv.port}/t/img:v1`, '--name', 'hostile']);
      checkError(mode, r, `${label} ${mode}`);
      if (r.code === 0) await cleanupSuccess('image', 'hostile');
      await assertClean(`${label} ${mode}`);
    });
  }

  for (const [label, rel] of [
    ['InRelease', 'dists/bookworm/InRelease'],
    ['Packages.xz', 'dists/bookworm/main/binary-amd64/Packages.xz'],
    ['kernel .deb', ''],
  ] as const) {
    if (mode === 'long-body') continue; // the extra bytes are cut at Content-Length: a full pull, not a failure
    test(`Debian archive ${label}, server ${mode}: clear error, daemon alive, nothing left`, { skip: debSkip, timeout: 120_000 }, async () => {
      const p = '/' + (rel || mirror!.packages.kernel.filename);
      srv.set({ routes: { ...baseRoutes(), [p]: { file: join(mirror!.root, p), mode } }, dir: mirror!.root, trickleMs: 400 });
      const r = await d.cli(['--json', 'kernel', 'pull', 'debian-cloud-amd64']);
      if (r.code === 0) await cleanupSuccess('kernel', 'debian-cloud-amd64'); // keep later cases independent
      checkError(mode, r, `${label} ${mode}`);
      await assertClean(`${label} ${mode}`);
    });
  }
}
