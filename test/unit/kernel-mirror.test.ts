import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isDebianSuite, mirrorFromAptFiles, mirrorFromList, mirrorFromSources, resolveDebianMirror } from '../../src/kernels/mirror.js';

test('isDebianSuite: codenames, aliases, -updates/-backports yes; -security and foreign suites no', () => {
  for (const s of ['bookworm', 'bookworm-updates', 'bookworm-backports', 'trixie', 'sid', 'stable', 'unstable']) assert.equal(isDebianSuite(s), true, s);
  for (const s of ['bookworm-security', 'jammy', 'nodistro', 'cloud-sdk-bookworm', '']) assert.equal(isDebianSuite(s), false, s);
});

test('one-line sources.list: first deb line with a Debian suite; comments, deb-src, options, security skipped', () => {
  const text = [
    '# deb http://commented.example/debian bookworm main',
    'deb-src http://src.example/debian bookworm main',
    'deb http://security.debian.org/debian-security bookworm-security main',
    'deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main',
    'deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example/debian/ bookworm main',
    'deb http://later.example/debian bookworm main',
  ].join('\n');
  assert.equal(mirrorFromList(text), 'http://mirror.example/debian');
  assert.equal(mirrorFromList('deb http://deb.debian.org/debian-security bookworm-security main\n'), undefined);
});

test('deb822 .sources: first enabled deb stanza with a Debian suite (this is the Debian 12 default file)', () => {
  const text = `Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
`;
  assert.equal(mirrorFromSources(text), 'http://deb.debian.org/debian');
  const disabled = `Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\nEnabled: no\n\nTypes: deb-src deb\nURIs: http://on.example/debian/\nSuites: trixie\n`;
  assert.equal(mirrorFromSources(disabled), 'http://on.example/debian');
  assert.equal(mirrorFromSources('Types: deb-src\nURIs: http://x.example/debian\nSuites: bookworm\n'), undefined);
  assert.equal(mirrorFromSources('Types: deb\nURIs: https://deb.nodesource.com/node_20.x\nSuites: nodistro\n'), undefined);
});

test('mirrorFromAptFiles: files in apt order; unknown extensions ignored', () => {
  const m = mirrorFromAptFiles([
    { path: '/etc/apt/sources.list', content: '# empty\n' },
    { path: '/etc/apt/sources.list.d/a.list.disabled', content: 'deb http://disabled.example/debian bookworm main' },
    { path: '/etc/apt/sources.list.d/b.sources', content: 'Types: deb\nURIs: http://b.example/debian\nSuites: bookworm\n' },
    { path: '/etc/apt/sources.list.d/c.list', content: 'deb http://c.example/debian bookworm main' },
  ]);
  assert.equal(m, 'http://b.example/debian');
});

test('resolveDebianMirror: config wins; else reads an apt dir; else E_INVALID with a hint', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'banger-apt-'));
  try {
    assert.equal(await resolveDebianMirror('http://configured.example/debian/', dir), 'http://configured.example/debian');
    await assert.rejects(resolveDebianMirror(undefined, dir), (e: any) => e.code === 'E_INVALID' && /debianMirror/.test(e.hint));
    mkdirSync(join(dir, 'sources.list.d'));
    writeFileSync(join(dir, 'sources.list.d', 'z.list'), 'deb http://z.example/debian bookworm main\n');
    writeFileSync(join(dir, 'sources.list.d', 'debian.sources'), 'Types: deb\nURIs: http://d.example/debian\nSuites: bookworm\n');
    assert.equal(await resolveDebianMirror(undefined, dir), 'http://d.example/debian');
    writeFileSync(join(dir, 'sources.list'), 'deb http://main.example/debian bookworm main\n');
    assert.equal(await resolveDebianMirror(undefined, dir), 'http://main.example/debian');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
