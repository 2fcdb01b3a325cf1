import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BangerError } from '../../src/core/errors.js';
import { embeddedCatalog, mergeCatalogs, parseCatalog } from '../../src/kernels/catalog.js';

const SHA = 'c'.repeat(64);
const bundle = (over: Record<string, unknown> = {}) => ({
  name: 'k1',
  distro: 'test',
  arch: 'x86_64',
  kernelVersion: '6.1.0',
  tarballUrl: 'https://example.org/k1.tar.zst',
  tarballSha256: SHA,
  sizeBytes: 1234,
  description: 'a kernel',
  ...over,
});

function parseError(doc: unknown, origin = 'https://cat.example/kernels.json'): BangerError {
  try {
    parseCatalog(doc, origin);
  } catch (e) {
    assert.ok(e instanceof BangerError);
    return e;
  }
  assert.fail('expected a parse error');
}

test('the embedded catalog parses and holds the Debian cloud kernel, downloadable from the archive', () => {
  const entries = embeddedCatalog();
  const deb = entries.find((e) => e.name === 'debian-cloud-amd64');
  assert.ok(deb, 'debian-cloud-amd64 is embedded');
  assert.equal(deb.kind, 'debian');
  assert.equal(deb.catalog, 'embedded');
  if (deb.kind !== 'debian') return;
  assert.equal(deb.package, 'linux-image-cloud-amd64');
  assert.equal(deb.suite, 'bookworm');
  assert.equal(deb.distro, 'debian');
  assert.equal(deb.arch, 'x86_64');
  assert.ok((deb.sizeBytes ?? 0) > 50e6 && (deb.sizeBytes ?? 0) < 100e6);
  for (const e of entries) if (e.kind === 'bundle') assert.fail(`embedded bundle entry ${e.name}: bundles are added only once published`);
});

test('a bundle entry without kind defaults to "bundle"; relative tarball URLs resolve against the catalog URL', () => {
  const [e] = parseCatalog({ version: 1, entries: [bundle({ tarballUrl: 'files/k1.tar.zst' })] }, 'https://cat.example/dir/kernels.json');
  assert.equal(e!.kind, 'bundle');
  assert.equal(e!.kind === 'bundle' && e!.tarballUrl, 'https://cat.example/dir/files/k1.tar.zst');
  assert.equal(e!.catalog, 'https://cat.example/dir/kernels.json');
});

test('invalid catalogs: errors name the catalog URL and the field', () => {
  const cases: [unknown, RegExp][] = [
    [{ version: 2, entries: [] }, /field 'version'/],
    [{ entries: [] }, /field 'version'/],
    [{ version: 1, entries: [bundle({ tarballSha256: 'xyz' })] }, /field 'entries\[0\] \(k1\)\.tarballSha256'.*64 lowercase hex/],
    [{ version: 1, entries: [bundle({ sizeBytes: -1 })] }, /field 'entries\[0\] \(k1\)\.sizeBytes'/],
    [{ version: 1, entries: [bundle({ name: '../evil' })] }, /field 'entries\[0\] \(\.\.\/evil\)\.name'/],
    [{ version: 1, entries: [bundle(), bundle()] }, /field 'entries\[1\] \(k1\)\.name'.*duplicate/],
    [{ version: 1, entries: [bundle({ tarballUrl: 'file:///etc/passwd' })] }, /field 'entries\[0\] \(k1\)\.tarballUrl'.*scheme/],
    [{ version: 1, entries: [bundle({ kind: 'iso' })] }, /field 'entries\[0\] \(k1\)\.kind'.*unknown kind/],
    [{ version: 1, entries: [bundle({ extra: 1 })] }, /entries\[0\] \(k1\)/],
    [{ version: 1, entries: [{ name: 'd', kind: 'debian', distro: 'debian', arch: 'x86_64', suite: 'bookworm' }] }, /field 'entries\[0\] \(d\)\.package'/],
    [{ version: 1, entries: [{ ...bundle(), kernelVersion: undefined }] }, /field 'entries\[0\] \(k1\)\.kernelVersion'/],
  ];
  for (const [doc, re] of cases) {
    const e = parseError(doc);
    assert.equal(e.code, 'E_INVALID');
    assert.match(e.message, /^kernel catalog https:\/\/cat\.example\/kernels\.json: /);
    assert.match(e.message, re);
    assert.equal(e.details?.catalog, 'https://cat.example/kernels.json');
  }
});

test('merge: later catalogs replace earlier entries by name, others are kept, result sorted', () => {
  const embedded = parseCatalog({ version: 1, entries: [bundle({ name: 'a' }), bundle({ name: 'shared', description: 'embedded one' })] }, 'embedded');
  const r1 = parseCatalog({ version: 1, entries: [bundle({ name: 'shared', description: 'remote one' }), bundle({ name: 'c' })] }, 'https://r1.example/c.json');
  const r2 = parseCatalog({ version: 1, entries: [bundle({ name: 'b' })] }, 'https://r2.example/c.json');
  const merged = mergeCatalogs(embedded, r1, r2);
  assert.deepEqual(
    merged.map((e) => e.name),
    ['a', 'b', 'c', 'shared'],
  );
  const shared = merged.find((e) => e.name === 'shared')!;
  assert.equal(shared.description, 'remote one');
  assert.equal(shared.catalog, 'https://r1.example/c.json');
});
