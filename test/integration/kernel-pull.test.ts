import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, lstatSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { isBangerError, type BangerError } from '../../src/core/errors.js';
import { KernelService } from '../../src/kernels/service.js';
import type { ProgressEvent } from '../../src/rpc/protocol.js';
import {
  BundleServer,
  catalogDoc,
  goodBundle,
  maliciousBundles,
  missingToolsReason,
  readJson,
  sha256,
  storeSnapshot,
  testContext,
} from '../helpers/kernel-bundles.js';

const skip = missingToolsReason('tar', 'zstd');
const srv = new BundleServer();

before(
  async () => {
    if (!skip) await srv.start();
  },
  { timeout: 600_000 },
);
after(
  async () => {
    await srv.stop();
  },
  { timeout: 120_000 },
);

/** A fresh service whose remote catalog lists `entries` (served from srv). */
function setup(path: string, entries: Parameters<typeof catalogDoc>[0]) {
  srv.set(path, JSON.stringify(catalogDoc(entries, srv)));
  const ctx = testContext({ kernelCatalogs: [srv.url(path)] });
  return { ctx, svc: new KernelService(ctx) };
}

async function rejects(p: Promise<unknown>): Promise<BangerError> {
  try {
    await p;
  } catch (e) {
    if (isBangerError(e)) return e;
    throw e;
  }
  assert.fail('expected the operation to fail');
}

function rowCount(ctx: ReturnType<typeof testContext>, name: string): number {
  return (ctx.db.prepare('SELECT count(*) AS n FROM kernels WHERE name = ?').get(name) as { n: number }).n;
}

test('pull round trip: files, manifest, sha256, row, progress, then "used cache" on --force', { skip }, async () => {
  const { bundle, vmlinux } = goodBundle();
  srv.set('/good.tar.zst', bundle);
  const { ctx, svc } = setup('/cat-good.json', [{ name: 'good', path: '/good.tar.zst', bundle }]);
  try {
    const events: ProgressEvent[] = [];
    const res = await svc.pull('good', { progress: (e) => events.push(e) });
    assert.equal(res.download, 'downloaded');
    assert.equal(res.replaced, false);
    const k = res.kernel;
    assert.equal(k.dir, ctx.layout.kernelDir('good'));
    assert.deepEqual(readFileSync(k.vmlinux!), vmlinux);
    assert.equal(k.vmlinuxSha256, sha256(vmlinux));
    assert.ok(k.initrd && existsSync(k.initrd));
    assert.ok(k.modulesDir);
    const link = join(k.modulesDir, '6.1.0-test', 'alias.ko');
    assert.ok(lstatSync(link).isSymbolicLink());
    assert.equal(readlinkSync(link), 'kernel/virtio_blk.ko');
    assert.equal(readFileSync(link, 'utf8'), 'module');
    const m = readJson(join(k.dir, 'manifest.json'));
    assert.equal(m.name, 'good');
    assert.equal(m.distro, 'test');
    assert.equal(m.arch, 'x86_64');
    assert.equal(m.kernelVersion, '6.1.0-test');
    assert.equal(m.vmlinuxSha256, sha256(vmlinux));
    assert.equal(m.source, `pull:${srv.url('/good.tar.zst')}`);
    assert.ok(!Number.isNaN(Date.parse(m.importedAt)));
    assert.ok(existsSync(ctx.layout.blob(sha256(bundle))), 'verified bundle kept in the content store');
    assert.equal(rowCount(ctx, 'good'), 1);
    assert.deepEqual(svc.get('good'), k);
    assert.deepEqual(
      svc.list().map((x) => x.name),
      ['good'],
    );
    const stages = [...new Set(events.map((e) => e.stage))];
    assert.deepEqual(stages, ['download', 'verify', 'extract', 'install']);
    const dl = events.filter((e) => e.stage === 'download');
    assert.equal(dl.at(-1)!.current, bundle.length);
    assert.equal(dl.at(-1)!.total, bundle.length);
    assert.equal(srv.count('/good.tar.zst'), 1);
    assert.deepEqual(
      storeSnapshot(ctx).filter((p) => p.startsWith('tmp/')),
      [],
    );

    const again = await rejects(svc.pull('good'));
    assert.equal(again.code, 'E_EXISTS');
    assert.match(again.hint ?? '', /--force/);

    const forced = await svc.pull('good', { force: true });
    assert.equal(forced.download, 'cached');
    assert.equal(forced.replaced, true);
    assert.equal(srv.count('/good.tar.zst'), 1, 'a forced re-pull of the same digest does not download again');
    assert.deepEqual(readFileSync(forced.kernel.vmlinux!), vmlinux);
  } finally {
    ctx.cleanup();
  }
});

// Without the tools the bundles cannot be made: one skipped test stands for the whole family
// (so strict mode sees it), rather than registering none.
if (skip) test('pull rejects malicious bundles, leaving nothing behind', { skip }, () => {});
for (const mal of skip ? [] : maliciousBundles()) {
  test(`pull rejects a bundle with: ${mal.label}, leaving nothing behind`, async () => {
    const path = `/mal-${mal.label.replace(/\W+/g, '-')}.tar.zst`;
    srv.set(path, mal.bundle);
    const { ctx, svc } = setup(`/cat${path}.json`, [{ name: 'mal', path, bundle: mal.bundle }]);
    try {
      const before = storeSnapshot(ctx);
      const e = await rejects(svc.pull('mal'));
      assert.equal(e.code, mal.code, e.message);
      if (mal.code === 'E_UNSAFE_ENTRY') {
        assert.ok(e.message.includes(`'${mal.entry}'`), `message names the entry: ${e.message}`);
        assert.match(e.hint ?? '', /only regular files, directories and symlinks/);
      } else assert.ok(e.message.includes(mal.entry), `message names ${mal.entry}: ${e.message}`);
      assert.match(e.message, /kernel mal/);
      assert.deepEqual(storeSnapshot(ctx), before, 'no staging dir, temp file, blob or kernel dir left');
      assert.equal(rowCount(ctx, 'mal'), 0);
      assert.equal(existsSync('/etc/banger-evil'), false);
    } finally {
      ctx.cleanup();
    }
  });
}

test('pull rejects a sha256 mismatch: error names URL and both digests, no blob, no temp file, no row', { skip }, async () => {
  const { bundle } = goodBundle();
  srv.set('/mismatch.tar.zst', bundle);
  const wrong = 'a'.repeat(64);
  const { ctx, svc } = setup('/cat-mismatch.json', [{ name: 'mm', path: '/mismatch.tar.zst', bundle, sha256: wrong }]);
  try {
    const e = await rejects(svc.pull('mm'));
    assert.equal(e.code, 'E_DIGEST');
    assert.ok(e.message.includes(srv.url('/mismatch.tar.zst')));
    assert.ok(e.message.includes(wrong) && e.message.includes(sha256(bundle)));
    assert.deepEqual(storeSnapshot(ctx), []);
    assert.equal(rowCount(ctx, 'mm'), 0);
  } finally {
    ctx.cleanup();
  }
});

for (const status of [404, 500]) {
  test(`pull reports HTTP ${status} naming the URL and leaves nothing`, { skip }, async () => {
    const path = `/status-${status}.tar.zst`;
    const { bundle } = goodBundle();
    if (status !== 404) srv.set(path, { body: 'boom', status });
    const { ctx, svc } = setup(`/cat-status-${status}.json`, [{ name: 'http', path, bundle }]);
    try {
      const e = await rejects(svc.pull('http'));
      assert.equal(e.code, 'E_HTTP');
      assert.ok(e.message.includes(srv.url(path)), e.message);
      assert.ok(e.message.includes(String(status)), e.message);
      assert.deepEqual(storeSnapshot(ctx), []);
      assert.equal(rowCount(ctx, 'http'), 0);
    } finally {
      ctx.cleanup();
    }
  });
}

test('pull reports a cut-off download (fewer bytes than Content-Length) and leaves nothing', { skip }, async () => {
  const { bundle } = goodBundle();
  srv.set('/cut.tar.zst', { body: bundle, cutAfter: Math.floor(bundle.length / 2) });
  const { ctx, svc } = setup('/cat-cut.json', [{ name: 'cut', path: '/cut.tar.zst', bundle }]);
  try {
    const e = await rejects(svc.pull('cut'));
    assert.equal(e.code, 'E_HTTP', e.message);
    assert.match(e.message, /truncated/);
    assert.ok(e.message.includes(srv.url('/cut.tar.zst')));
    assert.deepEqual(storeSnapshot(ctx), []);
    assert.equal(rowCount(ctx, 'cut'), 0);
  } finally {
    ctx.cleanup();
  }
});

test('a failed --force keeps the old kernel; a good --force replaces it', { skip }, async () => {
  const v1 = goodBundle();
  const v2 = goodBundle({ vmlinux: Buffer.from('\x7fELF version two') });
  srv.set('/force-v1.tar.zst', v1.bundle);
  const { ctx, svc } = setup('/cat-force-1.json', [{ name: 'fk', path: '/force-v1.tar.zst', bundle: v1.bundle, kernelVersion: '1.0' }]);
  try {
    await svc.pull('fk');
    // The catalog now points to a broken v2 (digest mismatch).
    srv.set('/force-v2.tar.zst', v2.bundle);
    srv.set(
      '/cat-force-1.json',
      JSON.stringify(catalogDoc([{ name: 'fk', path: '/force-v2.tar.zst', bundle: v2.bundle, sha256: 'b'.repeat(64), kernelVersion: '2.0' }], srv)),
    );
    const snap = storeSnapshot(ctx);
    const e = await rejects(svc.pull('fk', { force: true }));
    assert.equal(e.code, 'E_DIGEST');
    assert.deepEqual(storeSnapshot(ctx), snap, 'old kernel files untouched, nothing added');
    assert.deepEqual(readFileSync(join(ctx.layout.kernelDir('fk'), 'vmlinux')), v1.vmlinux);
    assert.equal(svc.get('fk').kernelVersion, '1.0');
    // An unsafe v2 is also refused without touching v1.
    const mal = maliciousBundles()[1]!;
    srv.set('/force-mal.tar.zst', mal.bundle);
    srv.set('/cat-force-1.json', JSON.stringify(catalogDoc([{ name: 'fk', path: '/force-mal.tar.zst', bundle: mal.bundle, kernelVersion: '2.0' }], srv)));
    assert.equal((await rejects(svc.pull('fk', { force: true }))).code, 'E_UNSAFE_ENTRY');
    assert.deepEqual(readFileSync(join(ctx.layout.kernelDir('fk'), 'vmlinux')), v1.vmlinux);
    assert.equal(svc.get('fk').kernelVersion, '1.0');
    // A good v2 replaces it.
    srv.set('/cat-force-1.json', JSON.stringify(catalogDoc([{ name: 'fk', path: '/force-v2.tar.zst', bundle: v2.bundle, kernelVersion: '2.0' }], srv)));
    const res = await svc.pull('fk', { force: true });
    assert.equal(res.replaced, true);
    assert.equal(svc.get('fk').kernelVersion, '2.0');
    assert.deepEqual(readFileSync(join(ctx.layout.kernelDir('fk'), 'vmlinux')), v2.vmlinux);
    assert.equal(readJson(join(ctx.layout.kernelDir('fk'), 'manifest.json')).kernelVersion, '2.0');
    assert.deepEqual(
      storeSnapshot(ctx).filter((p) => p.startsWith('tmp/')),
      [],
    );
  } finally {
    ctx.cleanup();
  }
});

test('two concurrent pulls of one kernel download it exactly once; the second reports cached', { skip }, async () => {
  const { bundle } = goodBundle();
  srv.set('/conc.tar.zst', { body: bundle, delayMs: 200 });
  const { ctx, svc } = setup('/cat-conc.json', [{ name: 'conc', path: '/conc.tar.zst', bundle }]);
  try {
    const [a, b] = await Promise.all([svc.pull('conc'), svc.pull('conc')]);
    assert.equal(srv.count('/conc.tar.zst'), 1);
    assert.deepEqual([a.download, b.download].sort(), ['cached', 'downloaded']);
    assert.equal(b.joined, true);
    assert.deepEqual(a.kernel, b.kernel);
  } finally {
    ctx.cleanup();
  }
});

test('two kernels sharing one bundle digest download it once', { skip }, async () => {
  const { bundle } = goodBundle();
  srv.set('/shared.tar.zst', { body: bundle, delayMs: 100 });
  const { ctx, svc } = setup('/cat-shared.json', [
    { name: 'one', path: '/shared.tar.zst', bundle },
    { name: 'two', path: '/shared.tar.zst', bundle },
  ]);
  try {
    const [a, b] = await Promise.all([svc.pull('one'), svc.pull('two')]);
    assert.equal(srv.count('/shared.tar.zst'), 1);
    assert.deepEqual([a.download, b.download].sort(), ['cached', 'downloaded']);
  } finally {
    ctx.cleanup();
  }
});

test('cancelling a pull mid-download removes everything it created', { skip }, async () => {
  const { bundle } = goodBundle({ vmlinux: Buffer.alloc(256 * 1024, 9) });
  srv.set('/slow.tar.zst', { body: bundle, slowChunk: 512 });
  const { ctx, svc } = setup('/cat-slow.json', [{ name: 'slow', path: '/slow.tar.zst', bundle }]);
  try {
    const ac = new AbortController();
    let started = false;
    const p = svc.pull('slow', {
      signal: ac.signal,
      progress: (e) => {
        if (e.stage === 'download' && (e.current ?? 0) > 0 && !started) {
          started = true;
          ac.abort();
        }
      },
    });
    const e = await rejects(p);
    assert.ok(started, 'the download had started');
    assert.equal(e.code, 'E_CANCELLED', e.message);
    assert.deepEqual(storeSnapshot(ctx), []);
    assert.equal(rowCount(ctx, 'slow'), 0);
  } finally {
    ctx.cleanup();
  }
});

test('a damaged blob in the content store is detected on re-use, removed, and the kernel kept', { skip }, async () => {
  const { bundle } = goodBundle();
  srv.set('/dmg.tar.zst', bundle);
  const { ctx, svc } = setup('/cat-dmg.json', [{ name: 'dmg', path: '/dmg.tar.zst', bundle }]);
  try {
    await svc.pull('dmg');
    const blob = ctx.layout.blob(sha256(bundle));
    const { writeFileSync } = await import('node:fs');
    writeFileSync(blob, Buffer.concat([bundle, Buffer.from('junk')]));
    const e = await rejects(svc.pull('dmg', { force: true }));
    assert.equal(e.code, 'E_DIGEST');
    assert.equal(existsSync(blob), false);
    assert.ok(existsSync(join(ctx.layout.kernelDir('dmg'), 'vmlinux')));
    const again = await svc.pull('dmg', { force: true });
    assert.equal(again.download, 'downloaded');
  } finally {
    ctx.cleanup();
  }
});

test('single pass: an unsafe first entry stops the download early (extraction runs while bytes arrive)', { skip }, async () => {
  const { randomBytes } = await import('node:crypto');
  const { rawBundle } = await import('../helpers/kernel-bundles.js');
  const bundle = rawBundle([
    { name: '../evil', body: 'x' },
    { name: 'filler', body: randomBytes(2 * 1024 * 1024) },
  ]);
  srv.set('/early.tar.zst', { body: bundle, slowChunk: 16 * 1024 });
  const { ctx, svc } = setup('/cat-early.json', [{ name: 'early', path: '/early.tar.zst', bundle }]);
  try {
    const e = await rejects(svc.pull('early'));
    assert.equal(e.code, 'E_UNSAFE_ENTRY');
    const sent = srv.sent.get('/early.tar.zst') ?? 0;
    assert.ok(sent < bundle.length / 2, `the server was stopped early (${sent} of ${bundle.length} bytes sent)`);
    assert.deepEqual(storeSnapshot(ctx), []);
  } finally {
    ctx.cleanup();
  }
});

test('pull follows an HTTP redirect to the bundle; the kernel directory is world-readable', { skip }, async () => {
  const { bundle } = goodBundle();
  srv.set('/real/r.tar.zst', bundle);
  srv.set('/moved.tar.zst', { body: '', redirect: '/real/r.tar.zst' });
  const { ctx, svc } = setup('/cat-redirect.json', [{ name: 'redir', path: '/moved.tar.zst', bundle }]);
  try {
    const res = await svc.pull('redir');
    assert.equal(res.download, 'downloaded');
    assert.equal(srv.count('/real/r.tar.zst'), 1);
    assert.equal(lstatSync(res.kernel.dir).mode & 0o777, 0o755);
  } finally {
    ctx.cleanup();
  }
});

test('pull of a name that is in no catalog: E_NOT_FOUND with a hint', { skip }, async () => {
  const { ctx, svc } = setup('/cat-empty.json', []);
  try {
    const e = await rejects(svc.pull('nope'));
    assert.equal(e.code, 'E_NOT_FOUND');
    assert.match(e.message, /nope/);
    assert.match(e.hint ?? '', /kernel list --available/);
    assert.deepEqual(storeSnapshot(ctx), []);
  } finally {
    ctx.cleanup();
  }
});

test('a bundle with more entries than the limit is refused (inode exhaustion guard)', { skip }, async () => {
  const { mkdtempSync, rmSync, writeFileSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { extractBundle } = await import('../../src/kernels/extract.js');
  const { rawBundle } = await import('../helpers/kernel-bundles.js');
  const dir = mkdtempSync(join(tmpdir(), 'banger-many-'));
  try {
    const bundle = rawBundle(Array.from({ length: 50 }, (_, i) => ({ name: `f${i}`, body: 'x' })));
    writeFileSync(join(dir, 'b.tar.zst'), bundle);
    const { mkdirSync } = await import('node:fs');
    mkdirSync(join(dir, 'out'));
    const e = await rejects(extractBundle({ src: join(dir, 'b.tar.zst'), dest: join(dir, 'out'), label: 'many', maxEntries: 20 }));
    assert.equal(e.code, 'E_BUNDLE');
    assert.match(e.message, /more than 20 entries/);
    mkdirSync(join(dir, 'out2'));
    const ok = await extractBundle({ src: join(dir, 'b.tar.zst'), dest: join(dir, 'out2'), label: 'many', maxEntries: 100 });
    assert.equal(ok.entries, 51, 'under the limit the same bundle extracts (50 files + vmlinux)');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
