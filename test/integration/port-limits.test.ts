import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TcpForwarder } from '../../src/network/forward.js';
import { isRoot, missingTools, TestDaemon } from '../helpers/daemon.js';
import { makeStandin } from '../helpers/firecracker-standin/index.js';
import { cleanupAll, createNetns, nsRun } from '../helpers/netns.js';
import { importStandinImage } from '../helpers/standin-vm.js';

/**
 * Published ports under a flood (issue 19, item 4): a per-port cap on clients at once (the next
 * is closed at once, logged once per burst) and an idle timeout that closes both sides.
 *
 * First the forwarder itself on loopback (exact counts, the burst report, idle close of both
 * sides with a target that never reads); then the real daemon (own network namespace, the
 * Firecracker stand-in as VMM) with 500 idle connections to a published port whose "guest" is
 * a listener at the VM's address in a namespace of its own that never answers, with the
 * daemon's descriptor limit lowered so that, without the cap, the flood would exhaust it.
 */

const servers: Server[] = [];
const forwarders: TcpForwarder[] = [];
after(async () => {
  await Promise.all(forwarders.map((f) => f.close()));
  for (const s of servers) s.close();
});

/** Resolves when `ok()` holds, checked on every `tick` call; rejects naming `what` after `ms`. */
function until(what: string, ok: () => boolean, ms = 60_000): { tick: () => void; done: Promise<void> } {
  let resolve!: () => void;
  let reject!: (e: Error) => void;
  const done = new Promise<void>((res, rej) => ((resolve = res), (reject = rej)));
  const t = setTimeout(() => reject(new Error(`${what}: not reached within ${ms / 1000} s`)), ms);
  const tick = () => {
    if (ok()) {
      clearTimeout(t);
      resolve();
    }
  };
  queueMicrotask(tick);
  return { tick, done };
}

/** Waits (checking every 50 ms) until `ok()` holds; rejects naming `what` after `ms`. */
async function poll(what: string, ok: () => boolean, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`${what}: not reached within ${ms / 1000} s`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('forwarder: 500 clients at a cap of 100: 100 reach the target, 400 are closed at once, one burst reported with its count', async () => {
  let targetLive = 0;
  let targetMax = 0;
  let targetTotal = 0;
  const targetSockets: Socket[] = [];
  const ev = { tick: () => {} };
  const target = createServer({ pauseOnConnect: true }, (s) => {
    targetSockets.push(s); // never reads
    targetTotal++;
    targetMax = Math.max(targetMax, ++targetLive);
    s.on('close', () => targetLive--);
    ev.tick();
  });
  servers.push(target);
  await new Promise<void>((r) => target.listen(0, '127.0.0.1', () => r()));
  const caps: Array<[string, number]> = [];
  const burstEnded = until('the burst end report', () => caps.some(([e]) => e === 'end'));
  const f = new TcpForwarder(() => ({ host: '127.0.0.1', port: (target.address() as { port: number }).port }), {
    maxConnections: 100,
    capQuietMs: 300,
    onCap: (e, n) => {
      caps.push([e, n]);
      burstEnded.tick();
    },
  });
  await f.listen('127.0.0.1', 0);
  forwarders.push(f);

  let closed = 0;
  const settled = until('every client accepted by the target or closed', () => targetTotal + closed >= 500);
  ev.tick = settled.tick;
  const clients: Socket[] = [];
  for (let i = 0; i < 500; i++) {
    const c = connect({ host: '127.0.0.1', port: f.port });
    c.on('error', () => undefined);
    c.on('close', () => {
      closed++;
      settled.tick();
    });
    clients.push(c);
  }
  await settled.done;
  assert.equal(targetMax, 100, 'at most 100 connections reached the target at once');
  assert.equal(targetTotal, 100);
  assert.equal(closed, 400, '400 clients were closed at once');
  assert.equal(f.refused, 400);
  assert.equal(f.live, 100);
  await burstEnded.done;
  assert.deepEqual(
    caps,
    [
      ['start', 0],
      ['end', 400],
    ],
    'one report when the burst began, one with its count when it ended',
  );

  // A slot freed by a client leaving is taken by the next one.
  const accepted = until('a new client reaching the target', () => targetTotal === 101);
  ev.tick = accepted.tick;
  const gone = clients.find((c) => !c.destroyed)!;
  gone.resetAndDestroy(); // a FIN would be a half-close, passed on: the slot stays taken until idle
  await poll('the forwarder seeing the client gone', () => f.live === 99);
  const next = connect({ host: '127.0.0.1', port: f.port });
  next.on('error', () => undefined);
  clients.push(next);
  await accepted.done;
  for (const c of clients) c.destroy();
  for (const s of targetSockets) s.destroy();
});

test('forwarder: an idle connection to a target that never reads is closed on both sides', async () => {
  const targetSockets: Socket[] = [];
  const target = createServer({ pauseOnConnect: true }, (s) => void targetSockets.push(s));
  servers.push(target);
  await new Promise<void>((r) => target.listen(0, '127.0.0.1', () => r()));
  const f = new TcpForwarder(() => ({ host: '127.0.0.1', port: (target.address() as { port: number }).port }), { idleTimeoutMs: 1000 });
  await f.listen('127.0.0.1', 0);
  forwarders.push(f);
  const c = connect({ host: '127.0.0.1', port: f.port });
  c.on('error', () => undefined);
  const clientClosed = new Promise<void>((r) => c.once('close', () => r()));
  // 8 MiB: more than the socket buffers hold, so the copy stalls and both sockets go idle.
  c.write(Buffer.alloc(8 * 1024 * 1024, 1));
  await clientClosed;
  assert.equal(f.live, 0);
  // The target never read; now it does, and sees what arrived followed by the end of the stream.
  assert.equal(targetSockets.length, 1);
  const t = targetSockets[0]!;
  let got = 0;
  t.on('data', (d: Buffer) => (got += d.length));
  const targetClosed = new Promise<void>((r) => t.once('close', () => r()));
  t.on('error', () => undefined);
  t.resume();
  await targetClosed;
  assert.ok(got > 0 && got < 8 * 1024 * 1024, `the target got part of the stream before the close (${got} bytes)`);
});

test('forwarder: a connection with traffic is not idle', async () => {
  const echo = createServer((s) => s.pipe(s));
  servers.push(echo);
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', () => r()));
  const f = new TcpForwarder(() => ({ host: '127.0.0.1', port: (echo.address() as { port: number }).port }), { idleTimeoutMs: 1500 });
  await f.listen('127.0.0.1', 0);
  forwarders.push(f);
  const c = connect({ host: '127.0.0.1', port: f.port });
  let echoed = 0;
  let closedEarly = false;
  c.on('data', (d: Buffer) => (echoed += d.length));
  c.on('close', () => (closedEarly = true));
  await new Promise<void>((r) => c.once('connect', () => r()));
  for (let i = 0; i < 30; i++) {
    c.write('x');
    await new Promise((r) => setTimeout(r, 100)); // 3 s of traffic, one byte each 100 ms: never 1.5 s idle
  }
  assert.equal(closedEarly, false, 'a connection with traffic stays open past the idle timeout');
  while (echoed < 30) await new Promise((r) => setTimeout(r, 20));
  c.destroy();
});

// ------------------------------------------------------------------- through the daemon

const skip = !isRoot() ? 'needs root (namespaces, taps, nft)' : missingTools('ip', 'nft', 'mkfs.ext4', 'debugfs', 'ssh-keygen', 'prlimit');
const standin = makeStandin();
let ns = '';
let gns = '';
let d: TestDaemon;
let work = '';
const procs: ChildProcess[] = [];
const PORT = 18080;

before(
  async () => {
    if (skip) return;
    work = mkdtempSync(join(tmpdir(), 'banger-portlim-'));
    ns = createNetns('plim');
    gns = createNetns('plimg');
    d = new TestDaemon({
      netns: ns,
      config: { binaries: { firecracker: standin.binary }, vm: { stopTimeoutSeconds: 3 }, network: { bridge: 'bgpl0', subnet: '10.89.0.0/24' } },
    });
    await d.start();
    await importStandinImage(d, work, 'fck', 'plimg');
  },
  { timeout: 600_000 },
);

after(
  async () => {
    for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
    if (d) await d.cli(['vm', 'rm', '--force', 'pl'], { timeoutMs: 60_000 });
    await d?.cleanup();
    cleanupAll();
    standin.remove();
    if (work) rmSync(work, { recursive: true, force: true });
  },
  { timeout: 120_000 },
);

/** A Node script run inside namespace `netns`, printing one JSON state object per line. */
function nsScript<T>(netns: string, code: string, args: string[], onState: (s: T) => void): ChildProcess {
  const p = spawn('ip', ['netns', 'exec', netns, process.execPath, '-e', code, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  procs.push(p);
  let buf = '';
  p.stdout!.on('data', (b: Buffer) => {
    buf += b.toString();
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line) onState(JSON.parse(line) as T);
    }
  });
  return p;
}

/** The "guest": listens on :80, never answers; reports live / max / total / closed on every change. */
const GUEST = `
const s = { live: 0, max: 0, total: 0, closed: 0, listening: false };
const say = () => process.stdout.write(JSON.stringify(s) + '\\n');
require('node:net').createServer((c) => {
  s.total++; s.live++; s.max = Math.max(s.max, s.live); say();
  c.on('error', () => {});
  c.on('close', () => { s.live--; s.closed++; say(); });
}).listen(80, '0.0.0.0', () => { s.listening = true; say(); });`;

/** N clients to 127.0.0.1:PORT that send nothing; reports connected / closed on every change. */
const CLIENTS = `
const [port, n] = process.argv.slice(1).map(Number);
const s = { connected: 0, closed: 0 };
const say = () => process.stdout.write(JSON.stringify(s) + '\\n');
for (let i = 0; i < n; i++) {
  const c = require('node:net').connect({ host: '127.0.0.1', port });
  c.on('connect', () => { s.connected++; say(); });
  c.on('error', () => {});
  c.on('close', () => { s.closed++; say(); if (s.closed === n) process.exit(0); });
}`;

interface Guest {
  live: number;
  max: number;
  total: number;
  closed: number;
  listening: boolean;
}
interface Clients {
  connected: number;
  closed: number;
}

function startGuest(): { proc: ChildProcess; state: Guest; wait: (what: string, ok: (s: Guest) => boolean, ms?: number) => Promise<void> } {
  const state: Guest = { live: 0, max: 0, total: 0, closed: 0, listening: false };
  const waiters = new Set<() => void>();
  const proc = nsScript<Guest>(gns, GUEST, [], (s) => {
    Object.assign(state, s);
    for (const w of waiters) w();
  });
  return {
    proc,
    state,
    wait: (what, ok, ms) => {
      const u = until(`guest: ${what}`, () => ok(state), ms);
      waiters.add(u.tick);
      return u.done.finally(() => waiters.delete(u.tick));
    },
  };
}

function startClients(n: number): { state: Clients; wait: (what: string, ok: (s: Clients) => boolean, ms?: number) => Promise<void> } {
  const state: Clients = { connected: 0, closed: 0 };
  const waiters = new Set<() => void>();
  nsScript<Clients>(ns, CLIENTS, [String(PORT), String(n)], (s) => {
    Object.assign(state, s);
    for (const w of waiters) w();
  });
  return {
    state,
    wait: (what, ok, ms) => {
      const u = until(`clients: ${what}`, () => ok(state), ms);
      waiters.add(u.tick);
      return u.done.finally(() => waiters.delete(u.tick));
    },
  };
}

/**
 * Lower the running daemon's descriptor limit to what it uses now plus `headroom`: enough for
 * the capped connections (2 descriptors each) and RPC, too few for the uncapped flood.
 */
function squeezeFds(headroom: number): { pid: number; limit: number } {
  const pid = d.proc!.pid!; // ip netns exec and bin/bangerd exec in place: the daemon itself
  assert.match(readFileSync(`/proc/${pid}/cmdline`, 'utf8'), /bangerd/);
  const limit = readdirSync(`/proc/${pid}/fd`).length + headroom;
  const r = spawnSync('prlimit', ['--pid', String(pid), `--nofile=${limit}:${limit}`], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return { pid, limit };
}

const logLines = (re: RegExp) =>
  readFileSync(join(d.root, 'logs', 'bangerd.log'), 'utf8')
    .split('\n')
    .filter((l) => re.test(l));

test('daemon: 500 idle connections to a published port: the cap holds, RPC keeps answering, idle ones are closed on both sides; adopt keeps the limits', {
  skip,
  timeout: 300_000,
}, async () => {
  const created = await d.cli(
    [
      '--json',
      'vm',
      'create',
      '--image',
      'plimg',
      '--name',
      'pl',
      '--vmm',
      'firecracker',
      '--no-wait',
      '-p',
      `127.0.0.1:${PORT}:80`,
      '--port-max-conns',
      '100',
      '--port-idle-timeout',
      '15',
    ],
    { timeoutMs: 120_000 },
  );
  assert.equal(created.code, 0, created.stderr);
  const vm = JSON.parse(created.stdout);
  assert.deepEqual(vm.spec.portLimits, { maxConnections: 100, idleTimeoutSeconds: 15 });
  assert.match(
    (await d.cli(['vm', 'show', 'pl'])).stdout,
    /ports: +127\.0\.0\.1:18080->80\/tcp \(at most 100 clients at once each, idle ones closed after 15 s\)/,
  );
  // The "guest": its address on the VM's bridge, in a namespace of its own.
  nsRun(ns, ['ip', 'link', 'add', 'vgpl', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', gns]);
  nsRun(ns, ['ip', 'link', 'set', 'vgpl', 'master', 'bgpl0', 'up']);
  nsRun(gns, ['ip', 'addr', 'add', `${vm.ip}/24`, 'dev', 'eth0']);
  nsRun(gns, ['ip', 'link', 'set', 'eth0', 'up']);

  const guest = startGuest();
  await guest.wait('listening', (s) => s.listening);
  const { limit } = squeezeFds(350);

  const clients = startClients(500);
  // Every client is either through to the guest or closed: then count.
  await Promise.race([
    guest.wait('flood settled', (s) => s.total + clients.state.closed >= 500),
    clients.wait('flood settled', (s) => guest.state.total + s.closed >= 500),
  ]);
  assert.equal(guest.state.max, 100, `the guest saw at most 100 connections at once (daemon fd limit ${limit})`);
  assert.equal(guest.state.total, 100);
  assert.equal(clients.state.closed, 400, '400 clients closed at once');
  // RPC answers while the 100 are held (without the cap the descriptors would be gone).
  const show = await d.cli(['--json', 'vm', 'show', 'pl'], { timeoutMs: 30_000 });
  assert.equal(show.code, 0, show.stderr);
  assert.equal(logLines(/published port at its connection cap/).length, 1, 'the burst is logged once');
  // Idle for 15 s: the daemon closes both sides of every held connection.
  await clients.wait('all closed', (s) => s.closed === 500, 120_000);
  await guest.wait('all closed', (s) => s.closed === 100 && s.live === 0, 120_000);
  await poll('the burst end report in the log', () => logLines(/connections refused at the cap/).length === 1);
  assert.match(logLines(/connections refused at the cap/)[0]!, /"refused":400/);

  // A daemon crash and restart: the adopted VM's port reopens with the stored limits.
  await d.kill();
  guest.proc.kill('SIGKILL');
  await new Promise((r) => guest.proc.once('exit', r));
  await d.start();
  squeezeFds(350);
  const guest2 = startGuest();
  await guest2.wait('listening', (s) => s.listening);
  const clients2 = startClients(150);
  await Promise.race([
    guest2.wait('flood settled', (s) => s.total + clients2.state.closed >= 150),
    clients2.wait('flood settled', (s) => guest2.state.total + s.closed >= 150),
  ]);
  assert.equal(guest2.state.max, 100, 'after adopt: still at most 100 at once');
  assert.equal(clients2.state.closed, 50);
  assert.equal((await d.cli(['vm', 'ls'], { timeoutMs: 30_000 })).code, 0);
});
