import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { nullLogger } from '../../src/core/log.js';
import { method } from '../../src/rpc/protocol.js';
import { RpcServer } from '../../src/rpc/server.js';

/**
 * The RPC stream upgrade (`MethodContext.upgrade`, docs/agent.md) on a real RpcServer: after
 * the reply the socket belongs to the method; bytes pipelined after the request, or other
 * requests running on the connection, make the server refuse (close) instead.
 */
let dir = '';
let server: RpcServer | undefined;
let sockPath = '';

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'banger-upgrade-'));
  sockPath = join(dir, 'rpc.sock');
  server = new RpcServer({
    socketPath: sockPath,
    log: nullLogger,
    methods: {
      't.echo': method(z.object({}).strict(), async (_p, ctx) => {
        ctx.upgrade!((s) => s.on('data', (d) => s.write(Buffer.concat([Buffer.from('echo:'), d]))));
        return { streaming: true };
      }),
      't.slow': method(z.object({}).strict(), () => new Promise((r) => setTimeout(() => r(1), 500))),
    },
  });
  await server.listen();
});
after(async () => {
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

function client(): Promise<{ sock: Socket; data: () => string; closed: Promise<void> }> {
  return new Promise((resolve) => {
    const sock = connect(sockPath);
    let buf = '';
    sock.on('data', (d) => (buf += d));
    sock.on('error', () => {});
    const closed = new Promise<void>((r) => sock.on('close', () => r()));
    sock.once('connect', () => resolve({ sock, data: () => buf, closed }));
  });
}
const until = async (f: () => boolean, ms = 3000) => {
  for (let t = 0; t < ms && !f(); t += 20) await new Promise((r) => setTimeout(r, 20));
  return f();
};

test('after the reply, the connection carries raw bytes owned by the method', async () => {
  const c = await client();
  c.sock.write(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 't.echo', params: {} }) + '\n');
  assert.ok(await until(() => c.data().includes('\n')));
  assert.deepEqual(JSON.parse(c.data().split('\n')[0]!), { jsonrpc: '2.0', id: 1, result: { streaming: true } });
  c.sock.write('\x00\x01{"not":"json-rpc"}\n');
  assert.ok(await until(() => c.data().includes('echo:')));
  assert.equal(c.data().slice(c.data().indexOf('\n') + 1), 'echo:\x00\x01{"not":"json-rpc"}\n');
  c.sock.destroy();
});

test('bytes pipelined after the request, or another request running, refuse the upgrade', { timeout: 10_000 }, async () => {
  const a = await client();
  a.sock.write(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 't.echo', params: {} }) + '\nhalf');
  assert.ok(await until(() => a.sock.destroyed || a.sock.readableEnded, 3000), 'connection a was not closed');
  assert.doesNotMatch(a.data(), /echo:/);
  const b = await client();
  b.sock.write(
    JSON.stringify({ jsonrpc: '2.0', id: 1, method: 't.slow', params: {} }) +
      '\n' +
      JSON.stringify({ jsonrpc: '2.0', id: 2, method: 't.echo', params: {} }) +
      '\n',
  );
  assert.ok(await until(() => b.sock.readableEnded, 3000), 'connection b was not closed');
  assert.doesNotMatch(b.data(), /"id":1,"result"/, 'the connection was closed before the slow reply');
});
