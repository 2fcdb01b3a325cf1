import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compareDebVersions, findPackageStanzas, parseDepends, parseRelease, parseStanza, satisfies } from '../../src/kernels/debian/deb822.js';
import { debianArch, verifyInRelease } from '../../src/kernels/debian/archive.js';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Exec } from '../../src/core/exec.js';
import { BangerError } from '../../src/core/errors.js';
import { mirrorUrl } from '../../src/kernels/debian/download.js';

const RELEASE = `Origin: Debian
Suite: oldstable
Codename: bookworm
MD5Sum:
 f230d61720e789abf5df55d6026230c6 50060337 main/binary-amd64/Packages
SHA256:
 515e692f2c4121c6fcec444ef100cc18f79a991910615f3a88c8b7becfc94d2f 50060337 main/binary-amd64/Packages
 9E0B5AABB2465B3D2E7A7FE27F9913846277833F7A2826E7767ACCCFF5B588C5  8790396 main/binary-amd64/Packages.xz
`;

test('parseRelease reads header fields and only the SHA256 list', () => {
  const r = parseRelease(RELEASE);
  assert.equal(r.fields['Codename'], 'bookworm');
  assert.equal(r.fields['Suite'], 'oldstable');
  assert.deepEqual(r.sha256.get('main/binary-amd64/Packages'), {
    path: 'main/binary-amd64/Packages',
    size: 50060337,
    sha256: '515e692f2c4121c6fcec444ef100cc18f79a991910615f3a88c8b7becfc94d2f',
  });
  assert.equal(r.sha256.get('main/binary-amd64/Packages.xz')?.sha256, '9e0b5aabb2465b3d2e7a7fe27f9913846277833f7a2826e7767acccff5b588c5', 'hex lower-cased');
  assert.equal(r.sha256.size, 2, 'MD5Sum lines are not taken as sha256');
});

const PACKAGES = `Package: linux-image-cloud-amd64-dbg
Version: 1
Filename: pool/x.deb

Package: linux-image-cloud-amd64
Version: 6.1.176-1
Depends: linux-image-6.1.0-50-cloud-amd64 (= 6.1.176-1)
Description: Linux
 Package: linux-image-cloud-amd64
Filename: pool/main/l/linux-signed-amd64/linux-image-cloud-amd64_6.1.176-1_amd64.deb
Size: 1500
SHA256: 6f32a25a6ee7b58852de01577ba261fda873c3002c736a2148bf0a6593bd93c8

Package: linux-image-cloud-amd64
Version: 6.1.170-1
Filename: pool/old.deb
`;

test('findPackageStanzas matches the exact package, not prefixes or continuation lines', () => {
  const s = findPackageStanzas(PACKAGES, 'linux-image-cloud-amd64');
  assert.equal(s.length, 2);
  assert.equal(s[0]!['Version'], '6.1.176-1');
  assert.equal(s[0]!['Size'], '1500');
  assert.equal(s[0]!['Description'], 'Linux\nPackage: linux-image-cloud-amd64');
  assert.equal(s[1]!['Filename'], 'pool/old.deb');
  assert.deepEqual(findPackageStanzas(PACKAGES, 'linux-image-cloud'), []);
  assert.deepEqual(findPackageStanzas(Buffer.from(PACKAGES), 'linux-image-cloud-amd64'), s, 'a Buffer index gives the same stanzas');
});

test('parseStanza joins continuation lines', () => {
  assert.deepEqual(parseStanza('A: 1\nB: x\n y\n\tz\n'), { A: '1', B: 'x\ny\nz' });
});

test('parseDepends: groups, alternatives, relations, arch qualifiers', () => {
  assert.deepEqual(parseDepends('linux-image-6.1.0-50-cloud-amd64 (= 6.1.176-1), a | b:any (>= 2~rc1), c'), [
    [{ name: 'linux-image-6.1.0-50-cloud-amd64', op: '=', version: '6.1.176-1' }],
    [
      { name: 'a', op: undefined, version: undefined },
      { name: 'b', op: '>=', version: '2~rc1' },
    ],
    [{ name: 'c', op: undefined, version: undefined }],
  ]);
  assert.deepEqual(parseDepends(undefined), []);
});

test('compareDebVersions follows dpkg ordering', () => {
  const lt = (a: string, b: string) => {
    assert.ok(compareDebVersions(a, b) < 0, `${a} < ${b}`);
    assert.ok(compareDebVersions(b, a) > 0, `${b} > ${a}`);
  };
  lt('6.1.170-1', '6.1.176-1');
  lt('6.1.9-1', '6.1.10-1');
  lt('1.0~rc1-1', '1.0-1');
  lt('1.0-1', '1:0.1-1');
  lt('1.35.0-4+deb12u1', '1.35.0-4+deb12u1+b1');
  lt('1.0-1', '1.0-1a');
  lt('1.0a', '1.0+');
  assert.equal(compareDebVersions('1:1.35.0-4', '1:1.35.0-4'), 0);
  assert.equal(compareDebVersions('1.01', '1.1'), 0);
});

test('satisfies implements the relation operators', () => {
  assert.ok(satisfies('6.1.176-1', '=', '6.1.176-1'));
  assert.ok(!satisfies('6.1.176-2', '=', '6.1.176-1'));
  assert.ok(satisfies('2', '>=', '1') && satisfies('1', '>=', '1') && !satisfies('0', '>=', '1'));
  assert.ok(satisfies('1', '<<', '2') && !satisfies('2', '<<', '2'));
  assert.ok(satisfies('3', '>>', '2') && satisfies('2', '<=', '2'));
  assert.ok(satisfies('anything', undefined, undefined));
});

test('debianArch maps uname names and rejects others naming the arch', () => {
  assert.equal(debianArch('x86_64'), 'amd64');
  assert.equal(debianArch('aarch64'), 'arm64');
  assert.throws(() => debianArch('riscv64'), /riscv64/);
});

test('mirrorUrl joins without doubled slashes', () => {
  assert.equal(mirrorUrl('http://deb.debian.org/debian/', '/dists/bookworm/InRelease'), 'http://deb.debian.org/debian/dists/bookworm/InRelease');
});

/** A fake gpgv: prints the given status lines, writes "signed" text, exits with `code`. */
function fakeGpgv(status: string[], code = 0): Exec {
  return async (argv) => {
    const out = argv[argv.indexOf('--output') + 1]!;
    writeFileSync(out, 'Codename: bookworm\n');
    const stdout = status.map((s) => `[GNUPG:] ${s}`).join('\n') + '\n';
    return { command: argv, exitCode: code, stdout, stdoutBuffer: Buffer.from(stdout), stderr: '' };
  };
}

test('verifyInRelease decides on the gpgv status lines, not the exit code', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'banger-gpgv-'));
  try {
    const o = (exec: Exec) => ({ keyring: '/k.gpg', url: 'http://m/dists/bookworm/InRelease', outFile: join(dir, 'signed'), exec });
    assert.equal(
      await verifyInRelease(join(dir, 'InRelease'), o(fakeGpgv(['NEWSIG', 'GOODSIG AAAA Debian', 'VALIDSIG 4CB5 2026-07-11']))),
      'Codename: bookworm\n',
    );
    const cases: [string, string[], number][] = [
      ['exit 0 but no signature status at all', ['PLAINTEXT 74 0'], 0],
      ['GOODSIG without VALIDSIG', ['GOODSIG AAAA Debian'], 0],
      ['one good and one BAD signature', ['GOODSIG AAAA x', 'VALIDSIG 1 2', 'BADSIG BBBB y'], 0],
      ['unknown key', ['ERRSIG 6ED0E7B82643E131 1 8 01 1783765031 9', 'NO_PUBKEY 6ED0E7B82643E131'], 2],
    ];
    for (const [label, status, code] of cases) {
      await assert.rejects(
        verifyInRelease(join(dir, 'InRelease'), o(fakeGpgv(status, code))),
        (e: unknown) => e instanceof BangerError && e.code === 'E_SIGNATURE' && e.message.includes('http://m/dists/bookworm/InRelease'),
        label,
      );
      assert.ok(!existsSync(join(dir, 'signed')), `${label}: no signed text left behind`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
