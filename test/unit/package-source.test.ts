import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PackageUrl, resolvePackageSource } from '../../src/vms/package-source.js';
import { vmMethods } from '../../src/daemon/handlers/vms.js';
import { invalidParams } from '../../src/rpc/protocol.js';
import { loadConfig } from '../../src/core/config.js';
import { isBangerError, ErrorCode } from '../../src/core/errors.js';
import { seedFiles } from '../../src/vms/seed.js';
import type { VmService } from '../../src/vms/service.js';

test('PackageUrl accepts http(s) URLs and refuses other schemes and anything a shell or config file could split', () => {
  for (const ok of ['http://10.0.0.1:8080/debian', 'https://mirror.example/debian/', 'http://[fd00::1]:3128'])
    assert.equal(PackageUrl.safeParse(ok).success, true, ok);
  for (const bad of [
    'ftp://m/debian',
    'file:///srv/debian',
    '10.0.0.1/debian',
    'http://m/debian main',
    'http://m/$(reboot)',
    'http://m/`id`',
    "http://m/'x'",
    'http://m/a\nb',
    'http://m/a\\b',
    '',
  ]) {
    assert.equal(PackageUrl.safeParse(bad).success, false, JSON.stringify(bad));
  }
});

test('vm.create validates packageMirror and packageProxy at the RPC boundary, naming the field', () => {
  const create = vmMethods({} as VmService)['vm.create']!;
  assert.equal(create.schema.safeParse({ image: 'img', packageMirror: 'http://10.0.0.1/debian', packageProxy: 'http://10.0.0.1:3128' }).success, true);
  for (const field of ['packageMirror', 'packageProxy']) {
    const r = create.schema.safeParse({ image: 'img', [field]: 'ftp://10.0.0.1/debian' });
    assert.equal(r.success, false);
    const e = invalidParams('vm.create', (r as { error: any }).error);
    assert.equal(e.code, ErrorCode.Invalid);
    assert.match(e.message, new RegExp(`vm\\.create: invalid field '${field}': must be an http:// or https:// URL`));
  }
});

test('config firstBoot.packageMirror / packageProxy: defaults, validated with the field named', () => {
  const root = mkdtempSync(join(tmpdir(), 'banger-pkgsrc-'));
  try {
    writeFileSync(join(root, 'config.json'), JSON.stringify({ firstBoot: { packageMirror: 'http://10.0.0.1/debian/', packageProxy: 'http://10.0.0.1:3128' } }));
    const c = loadConfig({ BANGER_ROOT: root });
    assert.deepEqual(c.firstBoot, { packageMirror: 'http://10.0.0.1/debian/', packageProxy: 'http://10.0.0.1:3128', prepare: true, warmAfterPrepare: true });
    writeFileSync(join(root, 'config.json'), JSON.stringify({ firstBoot: { packageProxy: 'socks5://10.0.0.1' } }));
    assert.throws(
      () => loadConfig({ BANGER_ROOT: root }),
      (e: unknown) => isBangerError(e, ErrorCode.Invalid) && /field 'firstBoot\.packageProxy'/.test((e as Error).message),
    );
    writeFileSync(join(root, 'config.json'), '{}');
    assert.deepEqual(
      loadConfig({ BANGER_ROOT: root }).firstBoot,
      { prepare: true, warmAfterPrepare: true },
      'images are prepared once (and warmed after an explicit prepare) by default',
    );
    assert.equal(loadConfig({ BANGER_ROOT: root }).vm.leanBoot, true, 'the lean boot is the default');
    writeFileSync(join(root, 'config.json'), JSON.stringify({ firstBoot: { prepare: false }, vm: { leanBoot: false } }));
    const off = loadConfig({ BANGER_ROOT: root });
    assert.equal(off.firstBoot.prepare, false);
    assert.equal(off.vm.leanBoot, false);
    writeFileSync(join(root, 'config.json'), JSON.stringify({ firstBoot: { prepare: 'no' } }));
    assert.throws(
      () => loadConfig({ BANGER_ROOT: root }),
      (e: unknown) => isBangerError(e, ErrorCode.Invalid) && /field 'firstBoot\.prepare'/.test((e as Error).message),
    );
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('the create parameter wins over the config; the mirror loses a trailing slash', () => {
  assert.deepEqual(resolvePackageSource({}, { mirror: 'http://c/debian/', proxy: 'http://c:3128' }), { mirror: 'http://c/debian', proxy: 'http://c:3128' });
  assert.deepEqual(resolvePackageSource({ mirror: 'http://p/debian' }, { mirror: 'http://c/debian' }), { mirror: 'http://p/debian', proxy: undefined });
  assert.deepEqual(resolvePackageSource({}, {}), { mirror: undefined, proxy: undefined });
});

test('the seed carries package-mirror and package-proxy as one line each, only when asked for', () => {
  const base = { name: 'vm1', net: { ip: '10.0.0.2', prefix: 24, gateway: '10.0.0.1', dns: ['10.0.0.1'] }, hostKey: 'k', hostKeyPub: 'p', authorizedKey: 'a' };
  const plain = seedFiles(base);
  assert.equal(plain['package-mirror'], undefined);
  assert.equal(plain['package-proxy'], undefined);
  const f = seedFiles({ ...base, packageMirror: 'http://10.0.0.1:8080/debian', packageProxy: 'http://10.0.0.1:3128' });
  assert.deepEqual(f['package-mirror'], ['http://10.0.0.1:8080/debian\n', 0o644]);
  assert.deepEqual(f['package-proxy'], ['http://10.0.0.1:3128\n', 0o644]);
});
