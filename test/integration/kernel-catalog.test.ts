import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { KernelService } from '../../src/kernels/service.js';
import { BundleServer, catalogDoc, failure, goodBundle, missingToolsReason, testContext } from '../helpers/kernel-bundles.js';

const skip = missingToolsReason('tar', 'zstd');
const srv = new BundleServer();
before(
  async () => {
    if (!skip) await srv.start();
  },
  { timeout: 600_000 },
);
after(() => srv.stop());

test('catalog: remote catalogs are fetched and merged over the embedded one by name, with STATE', { skip }, async () => {
  const { bundle } = goodBundle();
  srv.set('/m/k.tar.zst', bundle);
  // The first remote overrides the embedded Debian entry by name; the second adds one and overrides the first's.
  srv.set(
    '/m/one.json',
    JSON.stringify({
      version: 1,
      entries: [
        {
          name: 'debian-cloud-amd64',
          distro: 'test',
          arch: 'x86_64',
          kernelVersion: '9.9',
          tarballUrl: 'k.tar.zst',
          tarballSha256: 'd'.repeat(64),
          sizeBytes: 1,
          description: 'override',
        },
        {
          name: 'remote-a',
          distro: 'test',
          arch: 'x86_64',
          kernelVersion: '1',
          tarballUrl: 'k.tar.zst',
          tarballSha256: 'd'.repeat(64),
          sizeBytes: 1,
          description: 'first',
        },
      ],
    }),
  );
  srv.set(
    '/m/two.json',
    JSON.stringify(
      catalogDoc(
        [
          { name: 'remote-a', path: '/m/k.tar.zst', bundle, description: 'second' },
          { name: 'remote-b', path: '/m/k.tar.zst', bundle },
        ],
        srv,
      ),
    ),
  );
  const ctx = testContext({ kernelCatalogs: [srv.url('/m/one.json'), srv.url('/m/two.json')] });
  try {
    const svc = new KernelService(ctx);
    let cat = await svc.catalog();
    assert.deepEqual(
      cat.map((e) => e.name),
      ['debian-cloud-amd64', 'remote-a', 'remote-b'],
    );
    const deb = cat.find((e) => e.name === 'debian-cloud-amd64')!;
    assert.equal(deb.description, 'override');
    assert.equal(deb.source, srv.url('/m/k.tar.zst'), 'relative tarballUrl resolved against the catalog URL');
    assert.equal(deb.catalog, srv.url('/m/one.json'));
    const a = cat.find((e) => e.name === 'remote-a')!;
    assert.equal(a.description, 'second');
    assert.equal(a.sizeBytes, bundle.length);
    assert.deepEqual(
      cat.map((e) => e.state),
      ['available', 'available', 'available'],
    );
    await svc.pull('remote-b');
    cat = await svc.catalog();
    assert.deepEqual(
      cat.map((e) => [e.name, e.state]),
      [
        ['debian-cloud-amd64', 'available'],
        ['remote-a', 'available'],
        ['remote-b', 'pulled'],
      ],
    );
  } finally {
    ctx.cleanup();
  }
});

test('catalog: with no remote catalogs the embedded one is listed', async () => {
  const ctx = testContext();
  try {
    const cat = await new KernelService(ctx).catalog();
    assert.deepEqual(
      cat.map((e) => [e.name, e.kind, e.state]),
      [['debian-cloud-amd64', 'debian', 'available']],
    );
  } finally {
    ctx.cleanup();
  }
});

test('catalog: an invalid remote catalog fails naming its URL and the field', { skip }, async () => {
  srv.set(
    '/bad/field.json',
    JSON.stringify({
      version: 1,
      entries: [{ name: 'x', distro: 'd', arch: 'x86_64', kernelVersion: '1', tarballUrl: 'x', tarballSha256: 'nothex', sizeBytes: 1 }],
    }),
  );
  srv.set('/bad/json.json', '{ not json');
  const cases: [string, string, RegExp][] = [
    ['/bad/field.json', 'E_INVALID', /field 'entries\[0\] \(x\)\.tarballSha256'/],
    ['/bad/json.json', 'E_INVALID', /not valid JSON/],
    ['/bad/missing.json', 'E_HTTP', /HTTP 404/],
  ];
  for (const [path, code, re] of cases) {
    const ctx = testContext({ kernelCatalogs: [srv.url(path)] });
    try {
      const e = await failure(new KernelService(ctx).catalog());
      assert.equal(e.code, code, e.message);
      assert.ok(e.message.includes(srv.url(path)), e.message);
      assert.match(e.message, re);
      assert.match(e.hint ?? '', /BANGER_KERNEL_CATALOGS/);
    } finally {
      ctx.cleanup();
    }
  }
});

test('catalog: an unreachable catalog server is an E_HTTP naming the URL', async () => {
  const dead = new BundleServer();
  await dead.start();
  const url = dead.url('/c.json');
  await dead.stop();
  const ctx = testContext({ kernelCatalogs: [url] });
  try {
    const e = await failure(new KernelService(ctx).catalog());
    assert.equal(e.code, 'E_HTTP');
    assert.ok(e.message.includes(url));
  } finally {
    ctx.cleanup();
  }
});

test('catalog: a file:// catalog is read from disk; a relative tarballUrl there is an error naming the field', async () => {
  const { mkdtempSync, rmSync, writeFileSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const { pathToFileURL } = await import('node:url');
  const dir = mkdtempSync(join(tmpdir(), 'banger-fcat-'));
  const entry = {
    name: 'local',
    distro: 'd',
    arch: 'x86_64',
    kernelVersion: '1',
    tarballUrl: 'http://127.0.0.1:1/k.tar.zst',
    tarballSha256: 'e'.repeat(64),
    sizeBytes: 5,
  };
  writeFileSync(join(dir, 'good.json'), JSON.stringify({ version: 1, entries: [entry] }));
  writeFileSync(join(dir, 'rel.json'), JSON.stringify({ version: 1, entries: [{ ...entry, tarballUrl: 'k.tar.zst' }] }));
  const good = pathToFileURL(join(dir, 'good.json')).toString();
  const rel = pathToFileURL(join(dir, 'rel.json')).toString();
  const missing = pathToFileURL(join(dir, 'missing.json')).toString();
  try {
    let ctx = testContext({ kernelCatalogs: [good] });
    try {
      const cat = await new KernelService(ctx).catalog();
      assert.deepEqual(
        cat.map((e) => [e.name, e.catalog]),
        [
          ['debian-cloud-amd64', 'embedded'],
          ['local', good],
        ],
      );
    } finally {
      ctx.cleanup();
    }
    ctx = testContext({ kernelCatalogs: [rel] });
    try {
      const e = await failure(new KernelService(ctx).catalog());
      assert.equal(e.code, 'E_INVALID');
      assert.match(e.message, /field 'entries\[0\] \(local\)\.tarballUrl'/);
    } finally {
      ctx.cleanup();
    }
    ctx = testContext({ kernelCatalogs: [missing] });
    try {
      const e = await failure(new KernelService(ctx).catalog());
      assert.equal(e.code, 'E_NOT_FOUND');
      assert.ok(e.message.includes(missing));
    } finally {
      ctx.cleanup();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
