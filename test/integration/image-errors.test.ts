import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isBangerError } from '../../src/core/errors.js';
import { isRoot, missingTools } from '../helpers/daemon.js';
import { FakeRegistry } from '../helpers/fake-registry.js';
import { TestRegistry } from '../helpers/registry.js';
import { OciLayout, makeTar, type Descriptor } from '../helpers/oci.js';
import { imageService, leftovers } from '../helpers/image-context.js';

/**
 * Bad input, each a clear error and nothing left behind (no row, no image dir, no staging
 * dir, no temp blob). The real registry covers digest corruption, missing tags and auth;
 * a fake one on 127.0.0.1 covers what a real registry will not serve.
 */
const skip = !isRoot() ? 'needs root (chown, mknod)' : missingTools('docker-registry', 'skopeo', 'mkfs.ext4', 'e2fsck', 'setfattr', 'htpasswd', 'openssl');

let work: string;
let layout: OciLayout;
let fake: FakeRegistry;
let good: Descriptor;
let goodLayer: Descriptor;

before(
  async () => {
    if (skip) return;
    work = mkdtempSync(join(tmpdir(), 'banger-imgerr-'));
    layout = new OciLayout(join(work, 'oci'));
    goodLayer = layout.layer(
      makeTar([
        { path: 'etc/', type: 'dir' },
        { path: 'etc/os-release', data: 'ID=test\n'.repeat(2000) },
      ]),
      'gzip',
    );
    good = layout.image([goodLayer]);
    layout.tag(good, 'good');
    const amd = layout.image([goodLayer], { architecture: 'amd64' });
    const arm = layout.image([goodLayer], { architecture: 'arm64', variant: 'v8' });
    const multi = layout.index([amd, arm]);
    layout.tag(multi, 'multi');
    const armOnly = layout.index([arm, { ...layout.image([goodLayer], { architecture: 's390x' }) }]);
    layout.tag(armOnly, 'armonly');
    layout.tag(layout.image([goodLayer], { architecture: 'arm64' }), 'single-arm');
    const weird = layout.image([goodLayer], { layerMediaOverride: 'application/vnd.example.weird+tar' });
    layout.tag(weird, 'weird-layer');
    const traversal = (name: string, entries: Parameters<typeof makeTar>[0]) => layout.tag(layout.image([layout.layer(makeTar(entries), 'none')]), name);
    traversal('dotdot', [
      { path: 'etc/', type: 'dir' },
      { path: 'etc/../../escaped', data: 'x' },
    ]);
    traversal('absolute', [{ path: '/etc/passwd-abs', data: 'x' }]);
    traversal('through-symlink', [
      { path: 'evil', type: 'symlink', linkpath: '/tmp' },
      { path: 'evil/banger-escaped', data: 'x' },
    ]);
    traversal('hardlink-out', [{ path: 'h', type: 'link', linkpath: '../../etc/shadow' }]);
    fake = await new FakeRegistry(join(work, 'oci')).start();
  },
  { timeout: 600_000 },
);

after(
  async () => {
    await fake?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  },
  { timeout: 120_000 },
);

async function expectFailure(ref: string, code: string, re: RegExp, opts: { cfg?: Record<string, unknown>; platform?: string } = {}) {
  const { svc, ctx, cleanup } = imageService(opts.cfg);
  try {
    await assert.rejects(svc.pull({ ref, platform: opts.platform }), (e: unknown) => {
      assert.ok(isBangerError(e), String(e));
      assert.equal(e.code, code, e.message);
      assert.match(e.message, re);
      return true;
    });
    assert.deepEqual(leftovers(ctx), [], 'nothing left behind');
  } finally {
    cleanup();
  }
}

test('--kernel-ref naming a kernel that does not exist is refused before any download', { skip }, async () => {
  const { svc, ctx, cleanup } = imageService();
  try {
    const before = fake.count('manifest', 'good');
    await assert.rejects(
      svc.pull({ ref: `${fake.host}/t/img:good`, kernelRef: 'no-such-kernel' }),
      (e: unknown) => isBangerError(e, 'E_NOT_FOUND') && /--kernel-ref: kernel 'no-such-kernel' not found/.test(e.message),
    );
    assert.equal(fake.count('manifest', 'good'), before);
    assert.deepEqual(leftovers(ctx), []);
  } finally {
    cleanup();
  }
});

test('missing tag: E_NOT_FOUND naming the reference', { skip }, () =>
  expectFailure(`${fake.host}/t/img:nope`, 'E_NOT_FOUND', /manifest .*t\/img:nope not found/),
);

test('unknown manifest media type', { skip }, async () => {
  fake.hooks.intercept = (_q, res, kind, ref) => {
    if (kind !== 'manifest' || ref !== 'odd') return false;
    const body = JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.example.thing+json', stuff: [] });
    res.writeHead(200, { 'content-type': 'application/vnd.example.thing+json' }).end(body);
    return true;
  };
  await expectFailure(`${fake.host}/t/img:odd`, 'E_REGISTRY', /unsupported manifest media type 'application\/vnd.example.thing\+json'/);
});

test('unknown layer media type is refused before any download', { skip }, async () => {
  fake.hooks = {};
  const before = fake.count('blob', goodLayer.digest);
  await expectFailure(`${fake.host}/t/img:weird-layer`, 'E_REGISTRY', /unsupported media type 'application\/vnd.example.weird\+tar'/);
  assert.equal(fake.count('blob', goodLayer.digest), before);
});

test('oversized manifest (> 4 MiB) is refused', { skip }, async () => {
  fake.hooks.intercept = (_q, res, kind, ref) => {
    if (kind !== 'manifest' || ref !== 'huge') return false;
    const body = Buffer.alloc(5 * 1024 * 1024, 0x20);
    res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json' }).end(body); // chunked: no content-length
    return true;
  };
  await expectFailure(`${fake.host}/t/img:huge`, 'E_REGISTRY', /more than the 4194304-byte limit/);
});

test('cut-off blob: E_DIGEST, no temp blob left', { skip }, async () => {
  fake.hooks.intercept = (_q, res, kind, ref) => {
    if (kind !== 'blob' || ref !== goodLayer.digest) return false;
    const data = readFileSync(join(work, 'oci', 'blobs', 'sha256', ref.slice(7)));
    const cut = data.subarray(0, Math.floor(data.length / 2));
    res.writeHead(200, { 'content-length': cut.length }).end(cut);
    return true;
  };
  await expectFailure(`${fake.host}/t/img:good`, 'E_DIGEST', /(cut off|not valid gzip|truncated)/);
  fake.hooks = {};
});

test('a blob whose bytes do not match its digest is rejected', { skip }, async () => {
  fake.hooks.intercept = (_q, res, kind, ref) => {
    if (kind !== 'blob' || ref !== goodLayer.digest) return false;
    // a different valid gzip tar of the same length is hard to make; flip bytes inside the gzip trailer-free region
    const data = Buffer.from(readFileSync(join(work, 'oci', 'blobs', 'sha256', ref.slice(7))));
    data[data.length - 5] ^= 0xff; // inside the gzip CRC/ISIZE trailer: decompression may still pass
    res.writeHead(200, { 'content-length': data.length }).end(data);
    return true;
  };
  await expectFailure(`${fake.host}/t/img:good`, 'E_DIGEST', /digest mismatch|not valid/);
  fake.hooks = {};
});

test('dropped connection mid-blob resumes with Range and succeeds', { skip }, async () => {
  let dropped = 0;
  fake.hooks.intercept = (q, res, kind, ref) => {
    if (kind !== 'blob' || ref !== goodLayer.digest || dropped) return false;
    dropped++;
    const data = readFileSync(join(work, 'oci', 'blobs', 'sha256', ref.slice(7)));
    res.writeHead(200, { 'content-length': data.length });
    res.write(data.subarray(0, 100), () => res.destroy());
    return true;
  };
  const { svc, cleanup } = imageService();
  try {
    const rec = await svc.pull({ ref: `${fake.host}/t/img:good`, name: 'resumed' });
    assert.equal(dropped, 1);
    assert.ok(existsSync(rec.rootfsPath));
  } finally {
    fake.hooks = {};
    cleanup();
  }
});

test('429 and 503 are retried with backoff', { skip }, async () => {
  let n = 0;
  fake.hooks.intercept = (_q, res, kind) => {
    if (kind !== 'manifest' || n >= 2) return false;
    n++;
    res.writeHead(n === 1 ? 429 : 503, { 'retry-after': '0' }).end();
    return true;
  };
  const { svc, cleanup } = imageService();
  try {
    const rec = await svc.pull({ ref: `${fake.host}/t/img:good`, name: 'retried' });
    assert.equal(n, 2);
    assert.equal(rec.name, 'retried');
  } finally {
    fake.hooks = {};
    cleanup();
  }
});

for (const [tag, re] of [
  ['dotdot', /entry 'etc\/\.\.\/\.\.\/escaped' has a '\.\.' component/],
  ['absolute', /entry '\/etc\/passwd-abs' has an absolute path/],
  ['through-symlink', /entry 'evil\/banger-escaped' would be written through the symlink 'evil'/],
  ['hardlink-out', /entry 'h' has a '\.\.' component in its hard link target '\.\.\/\.\.\/etc\/shadow'/],
] as const) {
  test(`traversal (${tag}) is rejected naming the entry and layer`, { skip }, async () => {
    await expectFailure(`${fake.host}/t/img:${tag}`, 'E_UNSAFE_ENTRY', new RegExp(`layer sha256:[a-f0-9]{12}.*${re.source}`));
    assert.ok(!existsSync('/tmp/banger-escaped'), 'nothing written outside the root');
  });
}

test('multi-platform index: the requested platform is selected; a missing one lists what exists', { skip }, async () => {
  const { svc, cleanup } = imageService();
  try {
    const rec = await svc.pull({ ref: `${fake.host}/t/img:multi`, name: 'arm', platform: 'linux/arm64' });
    assert.equal(rec.platform, 'linux/arm64');
  } finally {
    cleanup();
  }
  await expectFailure(`${fake.host}/t/img:armonly`, 'E_PLATFORM', /no image for platform linux\/amd64; available: linux\/arm64\/v8, linux\/s390x/);
  await expectFailure(`${fake.host}/t/img:single-arm`, 'E_PLATFORM', /is for linux\/arm64, not linux\/amd64/);
});

test('concurrent pulls sharing a layer download it once', { skip }, async () => {
  const { svc, cleanup } = imageService();
  try {
    const before = fake.count('blob', goodLayer.digest);
    await Promise.all([svc.pull({ ref: `${fake.host}/t/img:good`, name: 'c1' }), svc.pull({ ref: `${fake.host}/t/img:multi`, name: 'c2' })]);
    assert.equal(fake.count('blob', goodLayer.digest) - before, 1);
    assert.equal(svc.list().length, 2);
  } finally {
    cleanup();
  }
});

test('cancellation mid-download leaves nothing behind', { skip }, async () => {
  fake.hooks.intercept = (_q, res, kind, ref) => {
    if (kind !== 'blob' || ref !== goodLayer.digest) return false;
    const data = readFileSync(join(work, 'oci', 'blobs', 'sha256', ref.slice(7)));
    res.writeHead(200, { 'content-length': data.length });
    res.write(data.subarray(0, 50)); // then stall
    return true;
  };
  const { svc, ctx, cleanup } = imageService();
  try {
    const ac = new AbortController();
    const p = svc.pull(
      { ref: `${fake.host}/t/img:good`, name: 'cancelled' },
      { signal: ac.signal, progress: (e) => e.stage === 'layer' && e.current && ac.abort() },
    );
    await assert.rejects(p, (e: unknown) => isBangerError(e, 'E_CANCELLED'));
    assert.deepEqual(leftovers(ctx), []);
  } finally {
    fake.hooks = {};
    cleanup();
  }
});

test('mirrors are tried first; a dead mirror falls back to the origin', { skip }, async () => {
  const mirror = await new FakeRegistry(join(work, 'oci')).start();
  try {
    const { svc, cleanup } = imageService({ registryMirrors: { [fake.host]: [`http://${mirror.host}`] } });
    try {
      const originBefore = fake.count('manifest', 'good');
      await svc.pull({ ref: `${fake.host}/t/img:good`, name: 'via-mirror' });
      assert.equal(mirror.count('manifest', 'good'), 1, 'the mirror answered');
      assert.equal(fake.count('manifest', 'good'), originBefore, 'the origin was not asked');
    } finally {
      cleanup();
    }
  } finally {
    await mirror.stop();
  }
  const { svc, cleanup } = imageService({ registryMirrors: { [fake.host]: ['http://127.0.0.1:9'] } });
  try {
    const rec = await svc.pull({ ref: `${fake.host}/t/img:good`, name: 'fallback' });
    assert.equal(rec.name, 'fallback');
  } finally {
    cleanup();
  }
});

// ---- real registry: corrupt storage, auth ----

test('real registry with token auth allowing anonymous pull: anonymous Bearer flow works', { skip }, async () => {
  const reg = await TestRegistry.start({ auth: 'token', anonymousPull: true });
  try {
    await reg.push(join(work, 'oci'), 'good', 't/img:good');
    const { svc, cleanup } = imageService();
    try {
      assert.equal((await svc.pull({ ref: `${reg.host}/t/img:good`, name: 'anon' })).name, 'anon');
      assert.ok(
        reg.tokenRequests.some((r) => !r.authorized && r.scope === 'repository:t/img:pull'),
        'an anonymous token was issued',
      );
    } finally {
      cleanup();
    }
  } finally {
    await reg.stop();
  }
});

test('real registry: corrupted blob in storage → E_DIGEST, nothing kept', { skip }, async () => {
  const reg = await TestRegistry.start();
  try {
    await reg.push(join(work, 'oci'), 'good', 't/img:good');
    const p = reg.blobDataPath(goodLayer.digest);
    const data = readFileSync(p);
    data[100] ^= 0x01;
    writeFileSync(p, data);
    await expectFailure(`${reg.host}/t/img:good`, 'E_DIGEST', /digest mismatch|not valid gzip/);
  } finally {
    await reg.stop();
  }
});

for (const mode of ['htpasswd', 'token'] as const) {
  test(`real registry with ${mode} auth: wrong credentials → E_AUTH; login then pull works; docker config works`, { skip }, async () => {
    const reg = await TestRegistry.start({ auth: mode, users: { alice: 'right-pass' } });
    try {
      await reg.push(join(work, 'oci'), 'good', 't/img:good');
      const { svc, ctx, cleanup } = imageService();
      try {
        await assert.rejects(
          svc.pull({ ref: `${reg.host}/t/img:good`, name: 'anon' }),
          (e: unknown) => isBangerError(e, 'E_AUTH') && /registry login/.test(e.hint ?? ''),
        );
        await assert.rejects(svc.login({ registry: reg.host, username: 'alice', password: 'wrong' }), (e: unknown) => isBangerError(e, 'E_AUTH'));
        assert.equal((ctx.db.prepare('SELECT COUNT(*) AS n FROM registry_credentials').get() as { n: number }).n, 0, 'rejected login not stored');
        ctx.db.prepare("INSERT INTO registry_credentials VALUES (?, 'alice', 'wrong', 'now')").run(reg.host);
        await assert.rejects(svc.pull({ ref: `${reg.host}/t/img:good`, name: 'bad' }), (e: unknown) => isBangerError(e, 'E_AUTH') && /alice/.test(e.message));
        assert.deepEqual(leftovers(ctx), []);
        await svc.login({ registry: reg.host, username: 'alice', password: 'right-pass' });
        const rec = await svc.pull({ ref: `${reg.host}/t/img:good`, name: 'authed' });
        assert.equal(rec.name, 'authed');
        if (mode === 'token') assert.ok(reg.tokenRequests.some((r) => r.authorized && r.scope === 'repository:t/img:pull'));
        svc.logout(reg.host);
      } finally {
        cleanup();
      }
      const dc = mkdtempSync(join(tmpdir(), 'banger-dockercfg-'));
      const old = { cfg: process.env.DOCKER_CONFIG, path: process.env.PATH };
      try {
        writeFileSync(
          join(dc, 'config.json'),
          JSON.stringify({ auths: { [`http://${reg.host}`]: { auth: Buffer.from('alice:right-pass').toString('base64') } } }),
        );
        process.env.DOCKER_CONFIG = dc;
        const { svc, cleanup } = imageService();
        try {
          assert.equal((await svc.pull({ ref: `${reg.host}/t/img:good`, name: 'dockercfg' })).name, 'dockercfg');
        } finally {
          cleanup();
        }
        // credHelpers: docker-credential-<name> get, server on stdin, JSON on stdout
        const bin = join(dc, 'bin');
        (await import('node:fs')).mkdirSync(bin);
        writeFileSync(
          join(bin, 'docker-credential-bangertest'),
          `#!/bin/sh\nread server\n[ "$1" = get ] && [ "$server" = "${reg.host}" ] && echo '{"ServerURL":"${reg.host}","Username":"alice","Secret":"right-pass"}' && exit 0\necho "credentials not found in native keychain"; exit 1\n`,
          { mode: 0o755 },
        );
        writeFileSync(join(dc, 'config.json'), JSON.stringify({ credHelpers: { [reg.host]: 'bangertest' } }));
        process.env.PATH = `${bin}:${old.path}`;
        const h = imageService();
        try {
          assert.equal((await h.svc.pull({ ref: `${reg.host}/t/img:good`, name: 'helper' })).name, 'helper');
        } finally {
          h.cleanup();
        }
      } finally {
        if (old.cfg === undefined) delete process.env.DOCKER_CONFIG;
        else process.env.DOCKER_CONFIG = old.cfg;
        process.env.PATH = old.path;
        rmSync(dc, { recursive: true, force: true });
      }
    } finally {
      await reg.stop();
    }
  });
}
