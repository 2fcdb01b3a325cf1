import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { after } from 'node:test';

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { BangerError, ErrorCode, isBangerError } from '../../src/core/errors.js';
import { nullLogger } from '../../src/core/log.js';
import { RpcClient } from '../../src/rpc/client.js';
import { method, Name } from '../../src/rpc/protocol.js';
import { RpcServer } from '../../src/rpc/server.js';

/** A real server on a real Unix socket with small test methods. */
async function serve() {
  const dir = mkdtempSync(join(tmpdir(), 'banger-rpc-'));
  dirs.push(dir);
  const socketPath = join(dir, 's.sock');
  const events: string[] = [];
  const server = new RpcServer({
    socketPath,
    log: nullLogger,
    methods: {
      'test.echo': method(z.object({ name: Name, count: z.number().int().min(1) }).strict(), async (p) => ({ echoed: p })),
      'test.fail': method(z.object({}), async () => {
        throw new BangerError(ErrorCode.NotFound, 'thing x not found', { hint: 'create x first' });
      }),
      'test.crash': method(z.object({}), async () => {
        throw new TypeError('undefined is not a function');
      }),
      'test.slow': method(z.object({}), async (_p, { signal, progress }) => {
        progress({ stage: 'work', current: 1, total: 100 });
        await new Promise<void>((resolve, reject) => {
          const t = setTimeout(resolve, 10000);
          signal.addEventListener('abort', () => {
            clearTimeout(t);
            events.push('aborted+cleaned');
            reject(signal.reason);
          });
        });
        return 'finished';
      }),
    },
  });
  await server.listen();
  return { server, socketPath, events };
}

test('JSON-RPC round trip, validation naming the field, app errors with code and hint', async () => {
  const { server, socketPath } = await serve();
  const c = await RpcClient.connect(socketPath);
  try {
    assert.equal(statSync(socketPath).mode & 0o777, 0o660);
    assert.deepEqual(await c.call('test.echo', { name: 'vm1', count: 2 }), { echoed: { name: 'vm1', count: 2 } });
    await assert.rejects(
      c.call('test.echo', { name: '../etc', count: 2 }),
      (e: unknown) => isBangerError(e, ErrorCode.Invalid) && /invalid field 'name'/.test((e as Error).message),
    );
    await assert.rejects(c.call('test.echo', { name: 'ok', count: 0 }), /invalid field 'count'/);
    await assert.rejects(c.call('test.echo', { name: 'ok', count: 1, extra: true }), /Unrecognized key/);
    await assert.rejects(c.call('nope.nothing'), /unknown method 'nope.nothing'/);
    await assert.rejects(c.call('test.fail'), (e: unknown) => isBangerError(e, ErrorCode.NotFound) && (e as BangerError).hint === 'create x first');
    await assert.rejects(c.call('test.crash'), (e: unknown) => isBangerError(e, ErrorCode.Internal));
  } finally {
    c.close();
    await server.close();
  }
});

test('progress streams to the caller and cancel aborts the handler, which cleans up', async () => {
  const { server, socketPath, events } = await serve();
  const c = await RpcClient.connect(socketPath);
  try {
    const ac = new AbortController();
    const seen: unknown[] = [];
    const p = c.call(
      'test.slow',
      {},
      {
        signal: ac.signal,
        onProgress: (ev) => {
          seen.push(ev);
          ac.abort();
        },
      },
    );
    await assert.rejects(p, (e: unknown) => isBangerError(e, ErrorCode.Cancelled));
    assert.equal(seen.length, 1);
    assert.deepEqual(events, ['aborted+cleaned']);
  } finally {
    c.close();
    await server.close();
  }
});

test('a client that disconnects cancels its running requests', async () => {
  const { server, socketPath, events } = await serve();
  const c = await RpcClient.connect(socketPath);
  const p = c.call('test.slow', {}, { onProgress: () => c.close() });
  await assert.rejects(p, /connection to bangerd closed/);
  for (let i = 0; i < 50 && events.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(events, ['aborted+cleaned']);
  await server.close();
});

test('a second server refuses to steal a live socket', async () => {
  const { server, socketPath } = await serve();
  const second = new RpcServer({ socketPath, log: nullLogger, methods: {} });
  await assert.rejects(second.listen(), (e: unknown) => isBangerError(e, ErrorCode.Daemon) && /already serving/.test((e as Error).message));
  const c = await RpcClient.connect(socketPath);
  c.close();
  await server.close();
});
