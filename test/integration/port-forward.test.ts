import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import { TcpForwarder } from '../../src/network/forward.js';
import { PortForwards } from '../../src/vms/ports.js';
import { parsePortSpec } from '../../src/vms/publish-spec.js';
import { isBangerError } from '../../src/core/errors.js';
import { nullLogger } from '../../src/core/log.js';

/**
 * The daemon's port forwarder against real sockets on loopback: a well-behaved echo peer, and
 * hostile peers (one that never answers, one that resets, one that accepts and hangs, a client
 * that resets mid-stream). Each must fail only its own connection while others keep working.
 */
const servers: Server[] = [];
const forwarders: TcpForwarder[] = [];
after(async () => {
  await Promise.all(forwarders.map((f) => f.close()));
  for (const s of servers) s.close();
});

async function listen(handler: (s: Socket) => void): Promise<number> {
  const s = createServer({ allowHalfOpen: true }, handler); // a peer that ignores our FIN can hang
  servers.push(s);
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  return (s.address() as { port: number }).port;
}

async function forward(port: number | (() => number | undefined), o: { connectTimeoutMs?: number } = {}): Promise<TcpForwarder> {
  const f = new TcpForwarder(() => {
    const p = typeof port === 'number' ? port : port();
    return p === undefined ? undefined : { host: '127.0.0.1', port: p };
  }, o);
  await f.listen('127.0.0.1', 0);
  forwarders.push(f);
  return f;
}

/** Send `data`, half-close, collect everything until the peer closes. */
function roundTrip(port: number, data: Buffer, timeoutMs = 10_000): Promise<{ data: Buffer; error?: string }> {
  return new Promise((resolve) => {
    const c = connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    const got: Buffer[] = [];
    const t = setTimeout(() => {
      c.destroy();
      resolve({ data: Buffer.concat(got), error: 'timeout' });
    }, timeoutMs);
    c.on('data', (d) => got.push(d));
    c.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(t);
      resolve({ data: Buffer.concat(got), error: e.code ?? e.message });
    });
    c.on('close', () => {
      clearTimeout(t);
      resolve({ data: Buffer.concat(got) });
    });
    c.end(data);
  });
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

test('forwarder: 32 MiB each way through it intact (backpressure, half-close), 8 at once', async () => {
  const echo = await listen((s) => s.pipe(s));
  const f = await forward(echo);
  const blobs = Array.from({ length: 8 }, (_, i) => randomBytes(i === 0 ? 32 * 1024 * 1024 : 1024 * 1024));
  const rs = await Promise.all(blobs.map((b) => roundTrip(f.port, b, 60_000)));
  rs.forEach((r, i) => {
    assert.equal(r.error, undefined);
    assert.equal(sha(r.data), sha(blobs[i]!), `connection ${i} echoed intact`);
  });
});

test('forwarder: a response sent just before the target resets still reaches the client', async () => {
  // Like many small servers (and the e2e guest's perl one): read the request line, answer,
  // close with the rest of the request unread, which makes the kernel send RST right after.
  const rude = await listen((s) => s.once('data', () => s.write('HTTP/1.0 200 OK\r\n\r\nanswer before reset\n', () => s.resetAndDestroy())));
  const f = await forward(rude);
  for (let i = 0; i < 20; i++) {
    const r = await fetch(`http://127.0.0.1:${f.port}/`, { headers: { 'x-pad': 'y'.repeat(2000) }, signal: AbortSignal.timeout(5000) }).then(
      (x) => x.text(),
      (e) => `ERR:${e.cause?.code ?? e.name}`,
    );
    assert.equal(r, 'answer before reset\n', `request ${i}`);
  }
});

test('forwarder: hostile targets fail their own connection only; the forwarder keeps serving', async () => {
  const echo = await listen((s) => s.pipe(s));
  const hang = await listen(() => {}); // accepts, never reads or answers
  const reset = await listen((s) => s.resetAndDestroy());
  const closed = await listen(() => {});
  servers.at(-1)!.close(); // nothing listens there any more: ECONNREFUSED
  let target = echo;
  const f = await forward(() => target, { connectTimeoutMs: 1000 });

  target = reset;
  const r1 = await roundTrip(f.port, Buffer.from('hello'));
  assert.equal(r1.data.length, 0, 'a resetting target: client closed, nothing delivered');
  target = closed;
  const r2 = await roundTrip(f.port, Buffer.from('hello'));
  assert.equal(r2.data.length, 0, 'a refused target: client closed');
  target = hang;
  const hung = roundTrip(f.port, Buffer.from('hello'), 3000); // stays open: the peer says nothing
  while (f.accepted < 3) await new Promise((r) => setTimeout(r, 10)); // the target is chosen at accept
  target = echo;
  const ok = await roundTrip(f.port, Buffer.from('still here'));
  assert.equal(ok.data.toString(), 'still here', 'a hanging peer does not block another connection');
  assert.equal((await hung).error, 'timeout', 'the hanging connection is simply open');
  assert.equal(f.accepted, 4);
});

test('forwarder: no target (the VM has no address) closes the client at once', async () => {
  const f = await forward(() => undefined);
  const r = await roundTrip(f.port, Buffer.from('x'), 3000);
  assert.notEqual(r.error, 'timeout');
  assert.equal(r.data.length, 0);
});

test('forwarder: a client that resets mid-stream ends that connection; the target sees it closed', async () => {
  let targetClosed!: () => void;
  let targetGotData!: () => void;
  const closedP = new Promise<void>((r) => (targetClosed = r));
  const flowingP = new Promise<void>((r) => (targetGotData = r));
  const sink = await listen((s) => {
    s.on('data', () => targetGotData());
    for (const ev of ['end', 'close', 'error']) s.on(ev, () => targetClosed());
  });
  const f = await forward(sink);
  const c = connect({ host: '127.0.0.1', port: f.port });
  await new Promise<void>((r) => c.once('connect', () => r()));
  c.write(randomBytes(1024 * 1024));
  await flowingP; // mid-stream: bytes reach the target
  c.resetAndDestroy();
  await Promise.race([closedP, new Promise((_, rej) => setTimeout(() => rej(new Error('target connection not closed after the client reset')), 5000))]);
  const echo = await listen((s) => s.pipe(s));
  const f2 = await forward(echo);
  assert.equal((await roundTrip(f2.port, Buffer.from('ok'))).data.toString(), 'ok');
});

test('forwarder: close() stops listening and ends live connections; idempotent', async () => {
  const hang = await listen(() => {});
  const f = await forward(hang);
  const port = f.port;
  const live = roundTrip(port, Buffer.from('x'), 5000);
  while (f.accepted < 1) await new Promise((r) => setTimeout(r, 10)); // the forwarder holds it
  await f.close();
  await f.close();
  assert.notEqual((await live).error, 'timeout', 'a live connection is ended by close');
  assert.equal((await roundTrip(port, Buffer.from('x'))).error, 'ECONNREFUSED');
});

test('PortForwards.open: a taken host port is E_IN_USE naming it, and the ports opened before it are closed again', async () => {
  const taken = await listen(() => {});
  const free = await listen(() => {});
  await new Promise((r) => servers.at(-1)!.close(r));
  const pf = new PortForwards(nullLogger);
  const ports = [parsePortSpec(`${free}:80`), parsePortSpec(`${taken}:80`)];
  await assert.rejects(
    pf.open('vm1', ports, () => '127.0.0.1'),
    (e: unknown) => isBangerError(e, 'E_IN_USE') && e.message.includes(`127.0.0.1:${taken} is already in use`) && e.details?.field === '-p',
  );
  assert.equal(pf.active('vm1'), false);
  assert.equal((await roundTrip(free, Buffer.from('x'))).error, 'ECONNREFUSED', 'the first port was released');
  await assert.rejects(
    pf.open('vm2', [parsePortSpec(`192.0.2.1:${free}:80`)], () => '127.0.0.1'),
    (e: unknown) => isBangerError(e, 'E_NETWORK') && /HOSTIP must be an address of this host/.test(e.hint ?? ''),
  );
});
