import { test } from 'node:test';
import assert from 'node:assert/strict';
import { envCatalogs } from '../../src/cli/commands/kernel.js';
import { kernelMethods } from '../../src/daemon/handlers/kernels.js';
import type { KernelService } from '../../src/kernels/service.js';

/** The RPC boundary: every kernel.* input is validated before the service sees it. */
const methods = kernelMethods({} as KernelService);
const parse = (m: string, p: unknown) => methods[m]!.schema.safeParse(p);
const field = (m: string, p: unknown) => {
  const r = parse(m, p);
  assert.equal(r.success, false, `${m} ${JSON.stringify(p)} should be refused`);
  return r.success ? '' : r.error.issues[0]!.path.join('.');
};

test('kernel.* methods exist with the agreed names', () => {
  assert.deepEqual(Object.keys(methods).sort(), ['kernel.catalog', 'kernel.delete', 'kernel.import', 'kernel.list', 'kernel.pull', 'kernel.rm', 'kernel.show']);
});

test('names, flags and unknown fields are validated', () => {
  assert.equal(parse('kernel.pull', { name: 'tk' }).success, true);
  assert.equal(field('kernel.pull', { name: '../etc' }), 'name');
  assert.equal(field('kernel.pull', { name: 'tk', force: 'yes' }), 'force');
  assert.equal(field('kernel.pull', { name: 'tk', extra: 1 }), '');
  assert.equal(field('kernel.show', {}), 'name');
  assert.equal(field('kernel.delete', { name: 'a b' }), 'name');
  assert.equal(field('kernel.list', { x: 1 }), '');
});

test("client catalogs: http(s) only (no file:// read by the root daemon on a client's behalf), at most 16", () => {
  assert.equal(parse('kernel.catalog', { catalogs: ['http://127.0.0.1:8080/c.json', 'https://example.org/c.json'] }).success, true);
  assert.equal(field('kernel.catalog', { catalogs: ['file:///etc/shadow'] }), 'catalogs.0');
  assert.equal(field('kernel.pull', { name: 'x', catalogs: ['not a url'] }), 'catalogs.0');
  assert.equal(field('kernel.catalog', { catalogs: Array.from({ length: 17 }, (_, i) => `http://h/${i}`) }), 'catalogs');
});

test('kernel.import: absolute paths, safe labels', () => {
  assert.equal(
    parse('kernel.import', { name: 'k', vmlinux: '/boot/vmlinuz', initrd: '/boot/initrd.img', kernelVersion: '6.1.0-37-cloud-amd64' }).success,
    true,
  );
  assert.equal(field('kernel.import', { name: 'k', vmlinux: 'vmlinux' }), 'vmlinux');
  assert.equal(field('kernel.import', { name: 'k', vmlinux: '/v', modules: 'rel/dir' }), 'modules');
  assert.equal(field('kernel.import', { name: 'k', vmlinux: '/v', kernelVersion: '6.1; rm -rf /' }), 'kernelVersion');
  assert.equal(field('kernel.import', { name: 'k', vmlinux: '/v', distro: 'a/b' }), 'distro');
});

test('envCatalogs: the CLI forwards BANGER_KERNEL_CATALOGS as a list, or nothing', () => {
  assert.deepEqual(envCatalogs({ BANGER_KERNEL_CATALOGS: ' http://a/c.json , https://b/c.json,,' }), ['http://a/c.json', 'https://b/c.json']);
  assert.equal(envCatalogs({}), undefined);
  assert.equal(envCatalogs({ BANGER_KERNEL_CATALOGS: ' , ' }), undefined);
});
