import { test } from 'node:test';
import assert from 'node:assert/strict';
import { apiHost, defaultImageName, manifestRef, parseReference } from '../../src/images/reference.js';
import { isBangerError } from '../../src/core/errors.js';

const D = 'sha256:' + 'ab'.repeat(32);

const cases: [string, string, { registry: string; repository: string; tag?: string; digest?: string }][] = [
  ['debian', 'docker.io/library/debian:latest', { registry: 'docker.io', repository: 'library/debian', tag: 'latest' }],
  ['debian:bookworm', 'docker.io/library/debian:bookworm', { registry: 'docker.io', repository: 'library/debian', tag: 'bookworm' }],
  ['library/debian:12', 'docker.io/library/debian:12', { registry: 'docker.io', repository: 'library/debian', tag: '12' }],
  ['user/app', 'docker.io/user/app:latest', { registry: 'docker.io', repository: 'user/app', tag: 'latest' }],
  ['docker.io/library/debian:bookworm', 'docker.io/library/debian:bookworm', { registry: 'docker.io', repository: 'library/debian', tag: 'bookworm' }],
  ['docker.io/debian', 'docker.io/library/debian:latest', { registry: 'docker.io', repository: 'library/debian', tag: 'latest' }],
  ['index.docker.io/library/alpine', 'docker.io/library/alpine:latest', { registry: 'docker.io', repository: 'library/alpine', tag: 'latest' }],
  ['registry-1.docker.io/x/y:z', 'docker.io/x/y:z', { registry: 'docker.io', repository: 'x/y', tag: 'z' }],
  ['localhost/app', 'localhost/app:latest', { registry: 'localhost', repository: 'app', tag: 'latest' }],
  ['localhost:5000/app:v1', 'localhost:5000/app:v1', { registry: 'localhost:5000', repository: 'app', tag: 'v1' }],
  ['127.0.0.1:35000/team/app', '127.0.0.1:35000/team/app:latest', { registry: '127.0.0.1:35000', repository: 'team/app', tag: 'latest' }],
  ['ghcr.io/org/repo/sub:1.2.3', 'ghcr.io/org/repo/sub:1.2.3', { registry: 'ghcr.io', repository: 'org/repo/sub', tag: '1.2.3' }],
  [`debian@${D}`, `docker.io/library/debian@${D}`, { registry: 'docker.io', repository: 'library/debian', digest: D }],
  [`quay.io/a/b:t@${D}`, `quay.io/a/b:t@${D}`, { registry: 'quay.io', repository: 'a/b', tag: 't', digest: D }],
  [
    'my-reg.example.com:443/a_b/c.d-e',
    'my-reg.example.com:443/a_b/c.d-e:latest',
    { registry: 'my-reg.example.com:443', repository: 'a_b/c.d-e', tag: 'latest' },
  ],
  ['foo__bar/baz', 'docker.io/foo__bar/baz:latest', { registry: 'docker.io', repository: 'foo__bar/baz', tag: 'latest' }],
  ['[::1]:5000/app:x', '[::1]:5000/app:x', { registry: '[::1]:5000', repository: 'app', tag: 'x' }],
];

for (const [input, canonical, parts] of cases) {
  test(`reference ${input} → ${canonical}`, () => {
    const r = parseReference(input);
    assert.equal(r.canonical, canonical);
    assert.equal(r.registry, parts.registry);
    assert.equal(r.repository, parts.repository);
    assert.equal(r.tag, parts.tag);
    assert.equal(r.digest, parts.digest);
  });
}

const bad: [string, RegExp][] = [
  ['', /empty/],
  ['Debian', /lowercase/],
  ['debian:', /tag ''/],
  ['debian:-x', /tag '-x'/],
  ['debian@sha256:123', /digest/],
  ['debian@md5:' + 'a'.repeat(32), /digest/],
  ['a//b', /component ''/],
  ['docker.io/-bad', /component '-bad'/],
  ['reg.io:port/app', /registry host/],
  [':tag', /missing repository/],
];
for (const [input, re] of bad) {
  test(`reference '${input}' is rejected with a clear error`, () => {
    assert.throws(
      () => parseReference(input),
      (e: unknown) => isBangerError(e, 'E_INVALID') && re.test(e.message) && e.message.includes(`'${input}'`) && !!e.hint,
    );
  });
}

test('default image names come from repository and tag', () => {
  assert.equal(defaultImageName(parseReference('docker.io/library/debian:bookworm')), 'debian-bookworm');
  assert.equal(defaultImageName(parseReference('ghcr.io/org/tool')), 'tool-latest');
  assert.equal(defaultImageName(parseReference(`alpine@${D}`)), 'alpine-abababababab');
  assert.equal(defaultImageName(parseReference('localhost:5000/app:v1.2_x')), 'app-v1.2_x');
});

test('apiHost maps docker.io to registry-1.docker.io; manifestRef prefers the digest', () => {
  assert.equal(apiHost('docker.io'), 'registry-1.docker.io');
  assert.equal(apiHost('localhost:5000'), 'localhost:5000');
  assert.equal(manifestRef(parseReference(`a/b:t@${D}`)), D);
  assert.equal(manifestRef(parseReference('a/b:t')), 't');
});
