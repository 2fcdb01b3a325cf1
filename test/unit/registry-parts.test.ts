import { test } from 'node:test';
import assert from 'node:assert/strict';
import { normaliseRegistryKey, parseChallenge } from '../../src/images/registry/auth.js';
import { useHttp } from '../../src/images/registry/client.js';
import { verifyBlob } from '../../src/core/content-store.js';
import { layerCompression, parseManifest, parsePlatform, selectPlatform, MediaType } from '../../src/images/registry/manifest.js';
import { defaultSize, GiB } from '../../src/images/build.js';
import { isBangerError } from '../../src/core/errors.js';

const D = (c: string) => 'sha256:' + c.repeat(64);

test('WWW-Authenticate challenges parse (quoted commas, escapes, Basic)', () => {
  const c = parseChallenge('Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push"');
  assert.deepEqual(c, { scheme: 'bearer', params: { realm: 'https://auth.example/token', service: 'registry.example', scope: 'repository:a/b:pull,push' } });
  assert.deepEqual(parseChallenge('Basic realm="x \\"y\\""'), { scheme: 'basic', params: { realm: 'x "y"' } });
  assert.equal(parseChallenge('Negotiate abc'), undefined);
  assert.equal(parseChallenge(undefined), undefined);
});

test('docker config registry keys normalise', () => {
  assert.equal(normaliseRegistryKey('https://index.docker.io/v1/'), 'docker.io');
  assert.equal(normaliseRegistryKey('registry-1.docker.io'), 'docker.io');
  assert.equal(normaliseRegistryKey('http://127.0.0.1:5000'), '127.0.0.1:5000');
  assert.equal(normaliseRegistryKey('GHCR.io/'), 'ghcr.io');
});

test('plain HTTP only for loopback names or configured insecure registries', () => {
  assert.equal(useHttp('localhost:5000', []), true);
  assert.equal(useHttp('127.0.0.1:35123', []), true);
  assert.equal(useHttp('[::1]:80', []), true);
  assert.equal(useHttp('registry.lan:5000', []), false);
  assert.equal(useHttp('registry.lan:5000', ['registry.lan:5000']), true);
  assert.equal(useHttp('registry.lan', ['registry.lan']), true);
  assert.equal(useHttp('127.0.0.2:5000', []), false);
});

test('platforms: parse, select, and list what exists when nothing matches', () => {
  assert.deepEqual(parsePlatform('linux/amd64'), { os: 'linux', architecture: 'amd64', variant: undefined });
  assert.deepEqual(parsePlatform('linux/aarch64/v8'), { os: 'linux', architecture: 'arm64', variant: 'v8' });
  assert.throws(
    () => parsePlatform('linux/amd64/v1/x'),
    (e: unknown) => isBangerError(e, 'E_INVALID') && /--platform/.test(e.message),
  );
  const index = {
    schemaVersion: 2 as const,
    manifests: [
      { mediaType: MediaType.OciManifest, digest: D('a'), size: 1, platform: { os: 'linux', architecture: 'arm', variant: 'v7' } },
      { mediaType: MediaType.OciManifest, digest: D('b'), size: 1, platform: { os: 'linux', architecture: 'arm64' } },
      { mediaType: MediaType.OciManifest, digest: D('c'), size: 1, platform: { os: 'unknown', architecture: 'unknown' } },
    ],
  };
  assert.equal(selectPlatform(index, parsePlatform('linux/arm64/v8'), 'x').digest, D('b'), 'arm64 without variant is v8');
  assert.equal(selectPlatform(index, parsePlatform('linux/arm/v7'), 'x').digest, D('a'));
  assert.throws(
    () => selectPlatform(index, parsePlatform('linux/amd64'), 'reg/x:1'),
    (e: unknown) => isBangerError(e, 'E_PLATFORM') && e.message === 'reg/x:1 has no image for platform linux/amd64; available: linux/arm/v7, linux/arm64',
  );
});

test('manifests: media types from body or header; schema 1 and unknown types refused; layer types', () => {
  const m = { schemaVersion: 2, config: { mediaType: 'x', digest: D('a'), size: 2 }, layers: [] };
  assert.equal(parseManifest(Buffer.from(JSON.stringify(m)), MediaType.DockerManifest, 'x').kind, 'manifest');
  assert.equal(parseManifest(Buffer.from(JSON.stringify({ schemaVersion: 2, manifests: [] })), MediaType.DockerList, 'x').kind, 'index');
  assert.throws(
    () => parseManifest(Buffer.from('{"schemaVersion":1,"fsLayers":[]}'), 'application/vnd.docker.distribution.manifest.v1+prettyjws', 'x'),
    /schema 1 is obsolete/,
  );
  assert.throws(
    () => parseManifest(Buffer.from('not json'), undefined, 'img'),
    (e: unknown) => isBangerError(e, 'E_REGISTRY') && /img: manifest is not valid JSON/.test(e.message),
  );
  assert.throws(
    () => parseManifest(Buffer.from(JSON.stringify({ ...m, mediaType: MediaType.OciManifest, config: { digest: 'md5:x' } })), undefined, 'img'),
    /field 'config/,
  );
  assert.equal(layerCompression('application/vnd.docker.image.rootfs.diff.tar.gzip', D('a')), 'gzip');
  assert.equal(layerCompression('application/vnd.oci.image.layer.v1.tar+zstd', D('a')), 'zstd');
  assert.equal(layerCompression('application/vnd.oci.image.layer.v1.tar', D('a')), 'none');
  assert.throws(
    () => layerCompression('application/x-foo', D('a')),
    (e: unknown) => isBangerError(e, 'E_REGISTRY'),
  );
});

test('blob verification: short, long, wrong digest', () => {
  const desc = { mediaType: 'x', digest: D('a'), size: 10 };
  assert.throws(() => verifyBlob(desc, 5, D('a')), /cut off: got 5 of 10 bytes/);
  assert.throws(() => verifyBlob(desc, 11, D('a')), /larger than the 10 bytes/);
  assert.throws(
    () => verifyBlob(desc, 10, D('b')),
    (e: unknown) => isBangerError(e, 'E_DIGEST') && /digest mismatch/.test(e.message),
  );
  assert.doesNotThrow(() => verifyBlob(desc, 10, D('a')));
});

test('default ext4 size: content x 1.5, 1 GiB floor, MiB aligned', () => {
  assert.equal(defaultSize(10), GiB);
  assert.equal(defaultSize(GiB), 1.5 * GiB);
  assert.equal(defaultSize(GiB + 1) % (1024 * 1024), 0);
});
