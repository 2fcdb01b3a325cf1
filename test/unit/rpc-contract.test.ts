import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { nullLogger } from '../../src/core/log.js';
import { imageMethods } from '../../src/daemon/handlers/images.js';
import { kernelMethods } from '../../src/daemon/handlers/kernels.js';
import { vmMethods } from '../../src/daemon/handlers/vms.js';
import type { ImageService } from '../../src/images/service.js';
import type { ImagePreparer } from '../../src/vms/prepare.js';
import type { KernelService } from '../../src/kernels/service.js';
import { bind } from '../../src/rpc/bind.js';
import { RpcClient } from '../../src/rpc/client.js';
import { legacyAliases, methods } from '../../src/rpc/contract.js';
import { RpcServer } from '../../src/rpc/server.js';
import type { VmService } from '../../src/vms/service.js';

const root = join(import.meta.dirname, '..', '..', '..');

test('the daemon serves exactly the contract: every method and legacy alias, nothing else', () => {
  const served = new Set([
    ...Object.keys(kernelMethods({} as KernelService)),
    ...Object.keys(imageMethods({} as ImageService, {} as ImagePreparer, {} as VmService)),
    ...Object.keys(vmMethods({} as VmService)),
    'daemon.status', // bound in daemon/main.ts against HandlersFor<'daemon.'>
    'daemon.shutdown',
    'daemon.teardown',
  ]);
  assert.deepEqual([...served].sort(), [...Object.keys(methods), ...Object.keys(legacyAliases)].sort());
  // One verb per action: no method of the contract itself is named delete/remove.
  assert.deepEqual(
    Object.keys(methods).filter((m) => /\.(delete|remove)$/.test(m)),
    [],
  );
});

test('the server validates params with the contract schema (the same object the client types come from)', () => {
  const t = kernelMethods({} as KernelService);
  assert.equal(t['kernel.rm']!.schema, methods['kernel.rm'].params);
  assert.equal(t['kernel.delete']!.schema, methods['kernel.rm'].params);
});

test('sizes are parsed once, in the contract: bytes or "8G"; image sizes round up to 4 KiB', () => {
  const size = (v: unknown) => methods['image.pull'].params.safeParse({ ref: 'r', sizeBytes: v });
  const ok = (v: unknown) => {
    const r = size(v);
    assert.ok(r.success, JSON.stringify(v));
    return r.data.sizeBytes;
  };
  assert.equal(ok('1G'), 1024 ** 3);
  assert.equal(ok('1.5GiB'), 1.5 * 1024 ** 3);
  assert.equal(ok(8192), 8192);
  assert.equal(ok('100000'), 102400);
  for (const bad of ['lots', '-1G', 0, -4096, 1.5, '']) {
    const r = size(bad);
    assert.equal(r.success, false, JSON.stringify(bad));
    assert.deepEqual(r.error!.issues[0]!.path, ['sizeBytes']);
  }
});

test('over a real socket: typed request, the rm result shape, and the legacy alias with its old shape', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'banger-contract-'));
  const calls: unknown[] = [];
  const server = new RpcServer({
    socketPath: join(dir, 's.sock'),
    log: nullLogger,
    methods: bind({
      'kernel.list': async () => [],
      'kernel.rm': async (p) => {
        calls.push(p);
        return { removed: [p.name], usedBy: p.force ? ['box'] : [] };
      },
    }),
  });
  await server.listen();
  const c = await RpcClient.connect(join(dir, 's.sock'));
  try {
    const list = await c.request('kernel.list', {});
    assert.deepEqual(list, []);
    assert.deepEqual(await c.request('kernel.rm', { name: 'k1' }), { removed: ['k1'], usedBy: [] });
    assert.deepEqual(await c.call('kernel.delete', { name: 'k2', force: true }), { name: 'k2', deleted: true, usedBy: ['box'] });
    assert.deepEqual(
      calls,
      [
        { name: 'k1', force: false },
        { name: 'k2', force: true },
      ],
      'defaults filled in by the contract schema',
    );
    await assert.rejects(c.request('kernel.rm', { name: '../x' }), (e: Error & { code?: string }) => e.code === 'E_INVALID' && /'name'/.test(e.message));
  } finally {
    c.close();
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the CLI, the SDK and the MCP server have no `any`: every RPC result they use is typed by the contract', () => {
  const files = (d: string): string[] =>
    readdirSync(d).flatMap((n) => (statSync(join(d, n)).isDirectory() ? files(join(d, n)) : n.endsWith('.ts') ? [join(d, n)] : []));
  const hits = ['src/cli', 'src/sdk', 'src/mcp']
    .flatMap((d) => files(join(root, d)))
    .flatMap((f) =>
      readFileSync(f, 'utf8')
        .split('\n')
        .map((line, i) => ({ f, i, line }))
        .filter(({ line }) => /(:\s*any\b|<any\b|\bas any\b|any\[\])/.test(line)),
    );
  assert.deepEqual(
    hits.map((h) => `${h.f}:${h.i + 1}: ${h.line.trim()}`),
    [],
  );
});
