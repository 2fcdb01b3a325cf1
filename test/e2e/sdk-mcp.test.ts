import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { Banger, BangerError, type Vm } from '../../src/sdk/index.js';
import { BANGER, REPO, type TestDaemon } from '../helpers/daemon.js';
import { type DebianVm, debianVmSkip, startDebianVm } from '../helpers/debian-vm.js';

/**
 * The SDK, `banger mcp` and the examples/ against one real Debian guest on QEMU TCG (one boot for
 * all of it): the MCP SDK's own client drives `bin/banger mcp` over stdio and creates the
 * sandbox (publishing guest port 8000), the SDK then works in that same VM, the three examples
 * run in it (BANGER_VM), and finally the MCP client removes it. The daemon runs in its own
 * netns; the example that fetches through the published port runs there too (its loopback).
 */
const skip = debianVmSkip('tar');

const T = { timeout: 900_000 };
const VM = 'sdkbox';
const PORT = 18095;
let fx: DebianVm | undefined;
let d: TestDaemon | undefined;
let ns = '';
let work = '';
let client: Client | undefined;
let b: Banger | undefined;
let mcpStderr = '';
let created: CallToolResult | undefined;
const stages: string[] = [];

before(
  async () => {
    if (skip) return;
    work = mkdtempSync(join(tmpdir(), 'banger-sdk-e2e-'));
    fx = await startDebianVm({ ns: 'sdkmcp', config: { vm: { sshTimeoutSeconds: 900, vcpu: 2, memoryMiB: 512 } } });
    d = fx.d;
    ns = fx.ns;
    // `banger mcp` in the daemon's namespace, as an MCP client would start it.
    const env = { ...(d.env as Record<string, string>), BANGER_SOCKET: d.socket };
    const transport = new StdioClientTransport({
      command: 'ip',
      args: ['netns', 'exec', ns, process.execPath, BANGER, 'mcp', '--ttl', '0'],
      env,
      stderr: 'pipe',
    });
    transport.stderr?.on('data', (c: Buffer) => (mcpStderr += c.toString()));
    client = new Client({ name: 'banger-e2e', version: '1.0.0' });
    await client.connect(transport);
    b = await Banger.connect({ socket: d.socket, autostart: false });
    // The one boot: the MCP client creates the sandbox every check below uses. A loaded runner can
    // take many minutes under TCG; boot progress keeps the MCP request alive.
    assert.equal((await client.listTools()).tools.length, 8);
    try {
      created = await call(
        'sandbox_create',
        { name: VM, ports: [`${PORT}:8000`] },
        { timeout: 600_000, maxTotalTimeout: 1_400_000, onprogress: (p) => p.message && stages.push(p.message) },
      );
    } catch (e) {
      const con = await d.cli(['vm', 'logs', VM]);
      throw new Error(
        `sandbox_create: ${(e as Error).message}\nprogress: ${stages.slice(-10).join(' | ')}\nmcp stderr: ${mcpStderr.slice(-2000)}\ndaemon stderr: ${d.stderr.slice(-3000)}\nconsole: ${con.stdout.slice(-3000)}`,
      );
    }
    if (created.isError) assert.fail(`sandbox_create: ${textOf(created)}\n${mcpStderr}\nconsole:\n${(await d.cli(['vm', 'logs', VM])).stdout.slice(-3000)}`);
  },
  { timeout: 1_500_000 },
);

after(
  async () => {
    b?.close();
    await client?.close().catch(() => {});
    await d?.cli(['vm', 'rm', '-f', VM], { timeoutMs: 120_000 }).catch(() => undefined);
    await fx?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  },
  { timeout: 180_000 },
);

const call = async (
  name: string,
  args: Record<string, unknown>,
  opts: { timeout?: number; maxTotalTimeout?: number; onprogress?: (p: { message?: string }) => void } = {},
) =>
  (await client!.callTool({ name, arguments: args }, undefined, {
    timeout: opts.timeout ?? 120_000,
    onprogress: opts.onprogress,
    resetTimeoutOnProgress: !!opts.onprogress,
    maxTotalTimeout: opts.maxTotalTimeout,
  })) as CallToolResult;
const textOf = (r: CallToolResult) => r.content.map((x) => (x.type === 'text' ? x.text : '')).join('');

test('MCP: list tools, create (with boot progress), exec, write then read, a bad argument is a tool error and the server keeps answering', {
  skip,
  ...T,
}, async () => {
  const c = created!;
  assert.match(textOf(c), new RegExp(`sandbox '${VM}' is running .*ports 127\\.0\\.0\\.1:${PORT}->8000/tcp`));
  assert.ok(stages.length > 0, 'boot progress reached the client');

  const e = await call('sandbox_exec', { name: VM, command: 'echo "$(id -un) on $(uname -s)"; echo warn >&2; exit 4' });
  assert.equal(e.structuredContent?.exitCode, 4, textOf(e));
  assert.equal(e.structuredContent?.stdout, 'root on Linux\n');
  assert.equal(e.structuredContent?.stderr, 'warn\n');
  const w = await call('sandbox_write_file', { name: VM, path: '/root/notes/today.txt', content: 'written by a model\n' });
  assert.equal(w.isError, undefined, textOf(w));
  assert.equal(textOf(await call('sandbox_read_file', { name: VM, path: '/root/notes/today.txt' })), 'written by a model\n');
  assert.match(textOf(await call('sandbox_list_files', { name: VM, path: '/root/notes' })), /^file +19 0644 today\.txt$/);
  const bad = await call('sandbox_exec', { name: VM, command: 'true', timeout: -5 });
  assert.equal(bad.isError, true);
  const gone = await call('sandbox_exec', { name: 'not-mine', command: 'true' });
  assert.match(textOf(gone), /^error E_NOT_FOUND/);
  assert.match(textOf(await call('sandbox_list', {})), new RegExp(`^${VM}  running`, 'm'), 'still answering');
  const log = await client!.readResource({ uri: `banger://vm/${VM}/log` });
  assert.match((log.contents[0] as { text: string }).text, /Linux version/);
});

test('SDK on the same guest: exec, spawn, files, copies, ports, logs, errors', { skip, ...T }, async () => {
  const vm: Vm = await b!.vms.get(VM);
  assert.equal(vm.info.state, 'running');
  const r = await vm.exec('sh', { args: ['-c', 'cat; echo "$X" >&2; exit 3'], stdin: 'in\n', env: { X: 'env ok' } });
  assert.deepEqual([r.exitCode, r.stdout.toString(), r.stderr.toString()], [3, 'in\n', 'env ok\n']);
  assert.equal((await vm.exec('no-such-binary')).exitCode, 127);
  await assert.rejects(vm.exec('sleep', { args: ['600'], timeoutMs: 500 }), (e: unknown) => e instanceof BangerError && e.code === 'E_TIMEOUT');

  const p = await vm.spawn('sh', { args: ['-c', 'while read l; do echo "got $l"; done'] });
  let out = '';
  p.stdout.on('data', (c: Buffer) => (out += c));
  p.stdin.end('a\nb\n');
  assert.equal((await p.wait()).exitCode, 0);
  assert.equal(out, 'got a\ngot b\n');

  await vm.files.mkdir('/srv/data/deep');
  const bytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
  await vm.files.write('/srv/data/deep/bin', bytes, { mode: 0o600 });
  assert.ok((await vm.files.read('/srv/data/deep/bin')).equals(bytes));
  assert.deepEqual(await vm.files.stat('/srv/data/deep/bin'), { type: 'file', mode: 0o600, size: 256 });
  assert.deepEqual(
    (await vm.files.list('/srv/data')).map((e) => [e.name, e.type]),
    [['deep', 'dir']],
  );
  await assert.rejects(vm.files.read('/srv/nope'), (e: unknown) => e instanceof BangerError && e.code === 'E_NOT_FOUND');

  const tree = join(work, 'tree');
  mkdirSync(join(tree, 'sub'), { recursive: true });
  writeFileSync(join(tree, 'sub', 'f'), 'hello guest');
  symlinkSync('sub/f', join(tree, 'link'));
  await vm.files.copyIn(tree, '/srv/tree');
  assert.equal(await vm.files.readText('/srv/tree/link'), 'hello guest');
  await vm.files.copyOut('/srv/tree', join(work, 'back'));
  assert.equal(readFileSync(join(work, 'back', 'sub', 'f'), 'utf8'), 'hello guest');
  assert.equal(readlinkSync(join(work, 'back', 'link')), 'sub/f');
  await vm.files.rm('/srv/tree', { recursive: true });
  assert.equal(await vm.files.exists('/srv/tree'), false);

  const ports = await vm.ports();
  assert.equal(ports.agent, true);
  let log = '';
  for await (const chunk of vm.logs()) log += chunk;
  assert.match(log, /Linux version/);
  const nf = await b!.vms.get('nope').catch((e: unknown) => e);
  assert.ok(nf instanceof BangerError && nf.code === 'E_NOT_FOUND', String(nf));
});

/** Runs an example (node strips its types) in the daemon's namespace, against VM. */
function example(file: string, args: string[] = []): Promise<{ code: number | null; out: string }> {
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, join(REPO, 'examples', file), ...args], {
    env: { ...d!.env, BANGER_SOCKET: d!.socket, BANGER_VM: VM },
    cwd: REPO,
  });
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c));
  child.stderr.on('data', (c: Buffer) => (out += c));
  const t = setTimeout(() => child.kill('SIGKILL'), 600_000);
  return new Promise((resolve) => child.on('close', (code) => (clearTimeout(t), resolve({ code, out }))));
}

test('examples: a test suite exit code, a build with its artefact copied out, a web server through a published port', { skip, ...T }, async () => {
  const t = await example('run-tests.ts');
  assert.equal(t.code, 0, t.out);
  assert.match(t.out, /2 passed, 0 failed\n[\s\S]*test suite exit code: 0/);
  const outDir = join(work, 'artefact');
  const bld = await example('build-artifact.ts', [outDir]);
  assert.equal(bld.code, 0, bld.out);
  assert.match(bld.out, /built hello-1\.2\.3 on Linux/);
  const sums = readFileSync(join(outDir, 'SHA256SUMS'), 'utf8');
  assert.match(sums, /^[0-9a-f]{64} {2}dist\/hello-1\.2\.3\.tar\.gz\n$/);
  const web = await example('web-server.ts');
  assert.equal(web.code, 0, web.out);
  assert.match(web.out, new RegExp(`GET http://127\\.0\\.0\\.1:${PORT}/ -> hello from the guest ${VM}`));
});

test('MCP: sandbox_remove removes the VM', { skip, ...T }, async () => {
  const r = await call('sandbox_remove', { name: VM }, { timeout: 300_000 });
  assert.equal(r.isError, undefined, textOf(r));
  assert.deepEqual(
    (await b!.vms.list()).map((v) => v.name),
    [],
  );
  assert.equal(textOf(await call('sandbox_list', {})), '(no sandboxes)');
});
