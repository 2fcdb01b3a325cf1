import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { Banger } from '../../src/sdk/index.js';
import { BANGER } from '../helpers/daemon.js';
import { agentMissing, startAgentDaemon, type AgentDaemon } from '../helpers/agent-daemon.js';

/**
 * `banger mcp` (bin/banger: the bundled CLI and its lazily loaded mcp chunk) driven by the MCP SDK's own
 * client over stdio, against the daemon's vm handlers and the real C agent on a Unix socket (no
 * guest; test/e2e/sdk-mcp.test.ts does the same against a real guest). VM 'box' exists before
 * the server; vm.create of the stand-in daemon adds a VM without booting one.
 */
const skip = agentMissing;
let d: AgentDaemon | undefined;
const clients: Client[] = [];

before(async () => {
  if (skip) return;
  d = await startAgentDaemon();
});
after(async () => {
  for (const c of clients) await c.close().catch(() => {});
  await d?.close();
});

async function mcp(args: string[]): Promise<Client> {
  const env = { ...(process.env as Record<string, string>), BANGER_SOCKET: d!.socket, BANGER_ROOT: join(d!.dir, 'root') };
  const transport = new StdioClientTransport({ command: process.execPath, args: [BANGER, 'mcp', ...args], env, stderr: 'pipe' });
  const client = new Client({ name: 'banger-test', version: '1.0.0' });
  await client.connect(transport);
  clients.push(client);
  return client;
}

const call = async (c: Client, name: string, args: Record<string, unknown>) => (await c.callTool({ name, arguments: args })) as CallToolResult;
const textOf = (r: CallToolResult) => r.content.map((x) => (x.type === 'text' ? x.text : '')).join('');

test('tools are listed with schemas; exec returns exit code and output, cut past the limit; timeouts are tool errors', { skip }, async () => {
  const c = await mcp(['--all', '--max-output-bytes', '1000', '--max-read-bytes', '1000']);
  const tools = await c.listTools();
  assert.deepEqual(tools.tools.map((t) => t.name).sort(), [
    'sandbox_create',
    'sandbox_exec',
    'sandbox_list',
    'sandbox_list_files',
    'sandbox_ports',
    'sandbox_read_file',
    'sandbox_remove',
    'sandbox_write_file',
  ]);
  for (const t of tools.tools) {
    assert.ok(t.description && t.description.length > 40, `${t.name} has a description`);
    assert.equal(t.inputSchema.type, 'object');
  }
  const exec = tools.tools.find((t) => t.name === 'sandbox_exec')!;
  assert.deepEqual(exec.inputSchema.required?.sort(), ['command', 'name']);

  const r = await call(c, 'sandbox_exec', { name: 'box', command: 'echo "hi $X"; echo oops >&2; exit 3', env: { X: 'there' } });
  assert.equal(r.isError, undefined);
  assert.equal(r.structuredContent?.exitCode, 3);
  assert.equal(r.structuredContent?.stdout, 'hi there\n');
  assert.match(textOf(r), /^exit code: 3\n--- stdout ---\nhi there\n\n--- stderr ---\noops\n$/);

  const big = await call(c, 'sandbox_exec', { name: 'box', command: "head -c 5000 /dev/zero | tr '\\0' a; printf END" });
  assert.equal(big.structuredContent?.stdoutCutBytes, 4003);
  assert.match(String(big.structuredContent?.stdout), /^a{500}\n\[… 4003 bytes cut \(output limit 1000 bytes\) …\]\na{497}END$/);

  const slow = await call(c, 'sandbox_exec', { name: 'box', command: 'echo before; sleep 30', timeout: 1 });
  assert.equal(slow.isError, true);
  assert.match(textOf(slow), /E_TIMEOUT[\s\S]*timed out after 1 s[\s\S]*before/);
});

test('files round-trip, reads are capped, listing; bad arguments and unknown names are tool errors and the server keeps answering; log resources', {
  skip,
}, async () => {
  const c = await mcp(['--all', '--max-read-bytes', '1000']);
  const p = join(d!.dir, 'mcp', 'sub', 'hello.txt');
  const w = await call(c, 'sandbox_write_file', { name: 'box', path: p, content: 'hello from a model\n', mode: '600' });
  assert.equal(w.isError, undefined, textOf(w));
  assert.equal(readFileSync(p, 'utf8'), 'hello from a model\n');
  assert.equal(textOf(await call(c, 'sandbox_read_file', { name: 'box', path: p })), 'hello from a model\n');
  writeFileSync(join(d!.dir, 'mcp', 'big'), 'x'.repeat(3000));
  const big = await call(c, 'sandbox_read_file', { name: 'box', path: join(d!.dir, 'mcp', 'big') });
  assert.equal(textOf(big), `${'x'.repeat(1000)}\n[… file is 3000 bytes; only the first 1000 are shown …]`);
  const ls = await call(c, 'sandbox_list_files', { name: 'box', path: join(d!.dir, 'mcp') });
  assert.match(textOf(ls), /^file +3000 0644 big\ndir +\d+ 0755 sub\/$/);

  const bad = await call(c, 'sandbox_exec', { name: 'box' });
  assert.equal(bad.isError, true);
  assert.match(textOf(bad), /command/);
  const badName = await call(c, 'sandbox_exec', { name: '../etc', command: 'true' });
  assert.equal(badName.isError, true);
  const unknown = await call(c, 'sandbox_read_file', { name: 'nope', path: '/etc/hostname' });
  assert.equal(unknown.isError, true);
  assert.match(textOf(unknown), /^error E_NOT_FOUND: vm 'nope' not found\nhint: banger vm list$/);
  const missing = await call(c, 'sandbox_read_file', { name: 'box', path: join(d!.dir, 'nope') });
  assert.match(textOf(missing), /^error E_NOT_FOUND: /);
  const ports = await call(c, 'sandbox_ports', { name: 'box' });
  assert.match(textOf(ports), /tcp 0\.0\.0\.0:22/);
  assert.match(textOf(await call(c, 'sandbox_list', {})), /^box {2}running/m, 'still answering after the errors');

  const res = await c.listResources();
  assert.ok(res.resources.some((r) => r.uri === 'banger://vm/box/log'));
  const log = await c.readResource({ uri: 'banger://vm/box/log' });
  assert.equal((log.contents[0] as { text: string }).text, 'boot line 1\nboot line 2\n');
});

test('without --all the server sees only what it created; the VM limit holds; its VMs are removed when it exits', { skip }, async () => {
  const c = await mcp(['--max-vms', '2']);
  const hidden = await call(c, 'sandbox_exec', { name: 'box', command: 'true' });
  assert.equal(hidden.isError, true);
  assert.match(textOf(hidden), /E_NOT_FOUND: no sandbox named 'box'[\s\S]*--all/);
  assert.equal(textOf(await call(c, 'sandbox_list', {})), '(no sandboxes)');
  const stages: string[] = [];
  const a = (await c.callTool({ name: 'sandbox_create', arguments: { name: 'mine-a', image: 'test-image' } }, undefined, {
    onprogress: (p) => void stages.push(String(p.message)),
  })) as CallToolResult;
  assert.deepEqual(stages, ['boot: pretend boot'], 'create progress reaches the client as MCP progress');
  assert.equal(a.isError, undefined, textOf(a));
  assert.match(textOf(a), /sandbox 'mine-a' is running/);
  assert.equal((await call(c, 'sandbox_create', { name: 'mine-b' })).isError, undefined);
  const third = await call(c, 'sandbox_create', { name: 'mine-c' });
  assert.equal(third.isError, true);
  assert.match(textOf(third), /E_TOO_LARGE: .*limit \(--max-vms 2\)/);
  assert.equal((await call(c, 'sandbox_exec', { name: 'mine-a', command: 'echo ok' })).structuredContent?.stdout, 'ok\n');
  assert.deepEqual((await call(c, 'sandbox_list', {})).structuredContent?.sandboxes, [
    { name: 'mine-a', state: 'running', image: 'test-image', ip: null },
    { name: 'mine-b', state: 'running', image: 'test-image', ip: null },
  ]);
  assert.match(textOf(await call(c, 'sandbox_remove', { name: 'mine-b' })), /removed mine-b/);
  const b = await Banger.connect({ socket: d!.socket, autostart: false });
  try {
    assert.deepEqual((await b.vms.list()).map((v) => v.name).sort(), ['box', 'mine-a', 'off']);
    await c.close(); // stdin closes: the server removes what it created, then exits
    for (let i = 0; i < 200 && (await b.vms.list()).some((v) => v.name === 'mine-a'); i++) await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual((await b.vms.list()).map((v) => v.name).sort(), ['box', 'off']);
  } finally {
    b.close();
  }
});
