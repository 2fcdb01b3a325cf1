import { test } from 'node:test';
import assert from 'node:assert/strict';
import { renderCatalog, renderKernel, renderKernelList, renderPull } from '../../src/cli/commands/kernel.js';

/** Golden output of the human renderings (the e2e tests check them against a live daemon too). */
const now = Date.parse('2026-11-25T12:00:00Z');
const kernel = {
  name: 'tk',
  distro: 'test',
  arch: 'x86_64',
  kernelVersion: '6.1.0-test',
  source: 'pull:http://127.0.0.1:8080/tk.tar.zst',
  vmlinuxSha256: 'ab'.repeat(32),
  dir: '/var/lib/banger/kernels/tk',
  vmlinux: '/var/lib/banger/kernels/tk/vmlinux',
  initrd: '/var/lib/banger/kernels/tk/initrd.img',
  sizeBytes: 18 * 1024 * 1024 + 512 * 1024,
  createdAt: '2026-11-25T09:00:00Z',
};

test('kernel list --available: aligned columns, human SIZE (~ for Debian estimates), STATE, "-" for unknown version', () => {
  const out = renderCatalog({
    entries: [
      {
        name: 'debian-cloud-amd64',
        kind: 'debian',
        distro: 'debian',
        arch: 'x86_64',
        sizeBytes: 70000000,
        state: 'available',
        description: 'Debian 12 cloud kernel',
      },
      {
        name: 'tk',
        kind: 'bundle',
        distro: 'test',
        arch: 'x86_64',
        kernelVersion: '6.1.0-test',
        sizeBytes: 3500000,
        state: 'pulled',
        description: 'test kernel',
      },
    ],
  });
  assert.equal(
    out,
    [
      'NAME                DISTRO  ARCH    VERSION     SIZE       STATE      DESCRIPTION',
      'debian-cloud-amd64  debian  x86_64  -           ~66.8 MiB  available  Debian 12 cloud kernel',
      'tk                  test    x86_64  6.1.0-test  3.3 MiB    pulled     test kernel',
    ].join('\n'),
  );
});

test('kernel list: table with size and age; empty list says what to do', () => {
  assert.equal(
    renderKernelList([kernel], now),
    [
      'NAME  DISTRO  ARCH    VERSION     SIZE      CREATED  SOURCE',
      'tk    test    x86_64  6.1.0-test  18.5 MiB  3h       pull:http://127.0.0.1:8080/tk.tar.zst',
    ].join('\n'),
  );
  assert.match(renderKernelList([]), /kernel list --available.*kernel pull NAME/);
});

test('kernel show and pull summaries', () => {
  const show = renderKernel(kernel).split('\n');
  assert.equal(show[5], `sha256:    ${'ab'.repeat(32)}  (vmlinux)`);
  assert.equal(show[10], 'vmlinuz:   -');
  assert.equal(show[12], 'modules:   -');
  assert.equal(
    renderPull({ kernel, download: 'downloaded', replaced: false, joined: false }),
    'pulled kernel tk 6.1.0-test (downloaded, 18.5 MiB) in /var/lib/banger/kernels/tk',
  );
  assert.equal(
    renderPull({ kernel, download: 'cached', replaced: true, joined: false }),
    'replaced kernel tk 6.1.0-test (used cache, 18.5 MiB) in /var/lib/banger/kernels/tk',
  );
  assert.match(renderPull({ kernel, download: 'cached', replaced: false, joined: true }), /already pulled by a concurrent request/);
});
