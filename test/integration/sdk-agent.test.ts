import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, lstatSync, mkdirSync, readFileSync, readlinkSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { z } from 'zod';
import { method } from '../../src/rpc/protocol.js';
import { RpcServer } from '../../src/rpc/server.js';
import { nullLogger } from '../../src/core/log.js';
import { Banger, BangerError, ErrorCode, type Vm } from '../../src/sdk/index.js';
import { agentMissing, startAgentDaemon, type AgentDaemon } from '../helpers/agent-daemon.js';

/**
 * The SDK (src/sdk) against the daemon's real vm.* handlers and the real C agent on a Unix
 * socket (no guest): exec and its errors, spawn with streams, signals and a pty, files, copies,
 * cancellation, progress and a lost connection. test/e2e/sdk-mcp.test.ts runs it on a guest.
 */
const skip = agentMissing;
let d: AgentDaemon | undefined;
let b: Banger;
let vm: Vm;
let waiting: (() => void) | undefined;

before(async () => {
  if (skip) return;
  // A long method with progress, cancelled through the SDK exactly as the CLI's Ctrl-C does ($/cancel).
  const slow = method(z.object({ name: z.string(), force: z.boolean().optional() }).passthrough(), async (_p, ctx) => {
    ctx.progress({ stage: 'download', current: 1, total: 10 });
    ctx.progress({ stage: 'download', current: 2, total: 10 });
    waiting?.();
    await new Promise<void>((r) => ctx.signal.addEventListener('abort', () => r(), { once: true }));
    throw new BangerError(ErrorCode.Cancelled, 'pull cancelled; partial download removed');
  });
  d = await startAgentDaemon({ 'kernel.pull': slow });
  b = await Banger.connect({ socket: d.socket, autostart: false });
  vm = await b.vms.get('box');
});
after(async () => {
  b?.close();
  await d?.close();
});

const procGone = async (token: string) => {
  for (let i = 0; i < 200; i++) {
    if (spawnSync('pgrep', ['-f', token]).status !== 0) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
};

test('exec: exit codes, 127, binary stdin/stdout, env/cwd/user, the version', { skip }, async () => {
  assert.deepEqual(await b.version(), { sdk: '0.1.0', daemon: 'agent-daemon' });
  assert.equal(vm.name, 'box');
  assert.equal((await vm.exec('true')).exitCode, 0);
  assert.equal((await vm.exec('sh', { args: ['-c', 'exit 7'] })).exitCode, 7);
  const k = await vm.exec('sh', { args: ['-c', 'kill -9 $$'] });
  assert.equal(k.exitCode, 137);
  const nf = await vm.exec('no-such-command-x');
  assert.equal(nf.exitCode, 127);
  assert.match(nf.stderr.toString(), /no-such-command-x/);
  const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
  const io = await vm.exec('sh', { args: ['-c', 'cat; cat /dev/null >&2'], stdin: all });
  assert.ok(io.stdout.equals(all), io.stdout.toString('hex'));
  const streamed = await vm.exec('wc', { args: ['-c'], stdin: Readable.from([Buffer.alloc(100_000, 1), Buffer.alloc(50_000, 2)]) });
  assert.equal(streamed.stdout.toString().trim(), '150000');
  const e = await vm.exec('sh', { args: ['-c', 'echo "$X|$(pwd)|$(id -un)" >&2'], env: { X: 'a b' }, cwd: '/tmp', user: 'nobody' });
  assert.equal(e.stderr.toString(), 'a b|/tmp|nobody\n');
  assert.equal(e.stdout.length, 0);
});

test('exec: timeoutMs, AbortSignal and maxBuffer kill the command and reject with their codes', { skip }, async () => {
  const t = vm.exec('sh', { args: ['-c', 'echo sdk-timeout-token; sleep 600'], timeoutMs: 300 });
  await assert.rejects(t, (e: unknown) => e instanceof BangerError && e.code === 'E_TIMEOUT');
  assert.ok(await procGone('sdk-timeout-token'), 'the timed-out command was killed');

  const ac = new AbortController();
  const p = vm.spawn('sh', { args: ['-c', 'echo ready; exec sleep 601 # sdk-abort-token'], signal: ac.signal });
  const proc = await p;
  proc.stdout.once('data', () => ac.abort());
  await assert.rejects(proc.wait(), (e: unknown) => e instanceof BangerError && e.code === ErrorCode.Cancelled);
  assert.ok(await procGone('sdk-abort-token'), 'the cancelled command was killed');

  const ac2 = new AbortController();
  ac2.abort();
  await assert.rejects(vm.exec('true', { signal: ac2.signal }), (e: unknown) => e instanceof BangerError && e.code === ErrorCode.Cancelled);

  await assert.rejects(
    vm.exec('head', { args: ['-c', '200000', '/dev/zero'], maxBuffer: 100_000 }),
    (e: unknown) => e instanceof BangerError && e.code === ErrorCode.TooLarge,
  );
});

test('spawn: streams both ways, kill(signal), a pty with resize', { skip }, async () => {
  const cat = await vm.spawn('cat');
  const chunks: Buffer[] = [];
  cat.stdout.on('data', (c: Buffer) => chunks.push(c));
  cat.stdin.write('hello ');
  cat.stdin.end('world');
  assert.deepEqual(await cat.wait(), { exitCode: 0, signal: undefined });
  assert.equal(Buffer.concat(chunks).toString(), 'hello world');

  const sleeper = await vm.spawn('sh', { args: ['-c', 'echo up; exec sleep 600'] });
  await new Promise((r) => sleeper.stdout.once('data', r));
  sleeper.kill('SIGTERM');
  assert.equal((await sleeper.wait()).exitCode, 143);

  const tty = await vm.spawn('sh', { args: ['-c', 'read x; stty size; tty'], pty: { rows: 24, cols: 80 } });
  let out = '';
  tty.stdout.on('data', (c: Buffer) => (out += c.toString()));
  tty.resize(33, 101);
  tty.stdin.write('go\n');
  assert.equal((await tty.wait()).exitCode, 0);
  assert.match(out, /33 101\r\n\/dev\/pts\/\d+/);
});

test('files: write/read (text, bytes, stream, mode), list, stat, exists, mkdir, rm, and their errors', { skip }, async () => {
  const g = join(d!.dir, 'guest');
  await vm.files.mkdir(`${g}/a/b`);
  await vm.files.write(`${g}/a/b/t.txt`, 'text ✓\n');
  assert.equal(await vm.files.readText(`${g}/a/b/t.txt`), 'text ✓\n');
  const bin = Buffer.from(Array.from({ length: 256 }, (_, i) => 255 - i));
  await vm.files.write(`${g}/a/bin`, bin, { mode: 0o750 });
  assert.ok((await vm.files.read(`${g}/a/bin`)).equals(bin));
  assert.equal(statSync(`${g}/a/bin`).mode & 0o777, 0o750);
  await vm.files.write(`${g}/a/s`, Readable.from([Buffer.from('from '), Buffer.from('a stream')]));
  assert.equal(readFileSync(`${g}/a/s`, 'utf8'), 'from a stream');
  symlinkSync('bin', `${g}/a/link`);
  writeFileSync(`${g}/a/odd name\nwith newline`, 'x');

  const ls = await vm.files.list(`${g}/a`);
  assert.deepEqual(
    ls.map((e) => [e.name, e.type]),
    [
      ['b', 'dir'],
      ['bin', 'file'],
      ['link', 'symlink'],
      ['odd name\nwith newline', 'file'],
      ['s', 'file'],
    ],
  );
  const binEntry = ls.find((e) => e.name === 'bin')!;
  assert.deepEqual([binEntry.size, binEntry.mode, binEntry.path], [256, 0o750, `${g}/a/bin`]);
  assert.ok(binEntry.mtime instanceof Date && binEntry.mtime.getTime() > 0);

  assert.deepEqual(await vm.files.stat(`${g}/a/bin`), { type: 'file', mode: 0o750, size: 256 });
  assert.equal((await vm.files.stat(`${g}/a/link`)).type, 'symlink');
  assert.equal(await vm.files.exists(`${g}/nope`), false);
  const code = (c: string) => (e: unknown) => e instanceof BangerError && e.code === c;
  await assert.rejects(vm.files.stat(`${g}/nope`), code('E_NOT_FOUND'));
  await assert.rejects(vm.files.read(`${g}/nope`), code('E_NOT_FOUND'));
  await assert.rejects(vm.files.read(`${g}/a`), code('E_INVALID'));
  await assert.rejects(vm.files.list(`${g}/a/bin`), code('E_INVALID'));
  await assert.rejects(vm.files.list(`${g}/nope`), code('E_NOT_FOUND'));
  await assert.rejects(vm.files.write(`${g}/no/dir/f`, 'x'), code('E_NOT_FOUND'));
  await assert.rejects(vm.files.write(`${g}/a`, 'x'), code('E_INVALID'));
  await assert.rejects(vm.files.read('relative/path'), code('E_INVALID'));
  await assert.rejects(vm.files.read(`${g}/a/bin`, { maxBytes: 100 }), code('E_TOO_LARGE'));

  await assert.rejects(vm.files.rm(`${g}/nope`), code('E_NOT_FOUND'));
  await vm.files.rm(`${g}/nope`, { force: true });
  await assert.rejects(vm.files.rm(`${g}/a/b`), code('E_EXEC'));
  await vm.files.rm(`${g}/a/b`, { recursive: true });
  await vm.files.rm(`${g}/a/link`);
  assert.equal(await vm.files.exists(`${g}/a/b`), false);
  assert.equal(await vm.files.exists(`${g}/a/link`), false);
  assert.equal(await vm.files.exists(`${g}/a/bin`), true, 'rm of a symlink leaves its target');
});

test('files.copyIn / copyOut: a tree to exactly the path given, symlinks kept, no setuid or owners from the guest', { skip }, async () => {
  const src = join(d!.dir, 'tree');
  mkdirSync(join(src, 'sub'), { recursive: true });
  writeFileSync(join(src, 'sub', 'f'), 'hello');
  symlinkSync('sub/f', join(src, 'link'));
  const g = join(d!.dir, 'g2');
  mkdirSync(g);
  await vm.files.copyIn(src, `${g}/copied`);
  assert.equal(readFileSync(join(g, 'copied', 'sub', 'f'), 'utf8'), 'hello');
  assert.equal(readlinkSync(join(g, 'copied', 'link')), 'sub/f');
  await vm.files.copyIn(join(src, 'sub', 'f'), `${g}/single`);
  assert.equal(readFileSync(join(g, 'single'), 'utf8'), 'hello');
  // a setuid file owned by someone else, in the "guest"
  writeFileSync(join(g, 'copied', 'suid'), '#!/bin/sh\n');
  spawnSync('chown', ['1234:2345', join(g, 'copied', 'suid')]);
  chmodSync(join(g, 'copied', 'suid'), 0o4755);
  const back = join(d!.dir, 'back');
  await vm.files.copyOut(`${g}/copied`, back);
  assert.equal(readFileSync(join(back, 'sub', 'f'), 'utf8'), 'hello');
  assert.equal(readlinkSync(join(back, 'link')), 'sub/f');
  const s = lstatSync(join(back, 'suid'));
  assert.deepEqual([s.mode & 0o7777, s.uid, s.gid], [0o755, process.getuid!(), process.getgid!()]);
  await vm.files.copyOut(`${g}/single`, join(d!.dir, 'single-back'));
  assert.equal(readFileSync(join(d!.dir, 'single-back'), 'utf8'), 'hello');
  const code = (c: string) => (e: unknown) => e instanceof BangerError && e.code === c;
  await assert.rejects(vm.files.copyOut(`${g}/copied`, back), code('E_EXISTS'));
  await assert.rejects(vm.files.copyOut(`${g}/nope`, join(d!.dir, 'x')), code('E_NOT_FOUND'));
  await assert.rejects(vm.files.copyIn(join(d!.dir, 'nope'), `${g}/x`), code('E_NOT_FOUND'));
  await assert.rejects(vm.files.copyIn(src, `${g}/no/such/dir`), code('E_NOT_FOUND'));
});

test('errors carry the daemon code and hint; ports and logs; a stopped VM', { skip }, async () => {
  const nf = await b.vms.get('nope').catch((e: unknown) => e);
  assert.ok(nf instanceof BangerError);
  assert.equal(nf.code, 'E_NOT_FOUND');
  assert.equal(nf.hint, 'banger vm list');
  const off = await b.vms.get('off');
  const r = await off.exec('true').catch((e: unknown) => e);
  assert.ok(r instanceof BangerError && r.code === ErrorCode.InUse, String(r));
  assert.match(r.hint ?? '', /banger vm start off/);
  assert.deepEqual((await vm.ports()).ports, [{ proto: 'tcp', address: '0.0.0.0', port: 22 }]);
  let logs = '';
  for await (const chunk of vm.logs()) logs += chunk;
  assert.equal(logs, 'boot line 1\nboot line 2\n');
  const bad = await vm.exec('true', { env: { 'NOT VALID': 'x' } }).catch((e: unknown) => e);
  assert.ok(bad instanceof BangerError && bad.code === 'E_INVALID' && /env\.0/.test(bad.message), String(bad));
});

test('progress as an async iterator and onProgress; an AbortSignal cancels the daemon operation', { skip }, async () => {
  const ac = new AbortController();
  const seen: number[] = [];
  const started = new Promise<void>((r) => (waiting = r));
  const op = b.kernels.pull('k1', { signal: ac.signal, onProgress: (ev) => seen.push(ev.current ?? -1) });
  void started.then(() => ac.abort());
  const iterated: string[] = [];
  const it = (async () => {
    for await (const ev of op) iterated.push(`${ev.stage}:${ev.current}`);
  })();
  await assert.rejects(it, (e: unknown) => e instanceof BangerError && e.code === ErrorCode.Cancelled && /partial download removed/.test(e.message));
  await assert.rejects(op, (e: unknown) => e instanceof BangerError && e.code === ErrorCode.Cancelled);
  assert.deepEqual(iterated, ['download:1', 'download:2']);
  assert.deepEqual(seen, [1, 2]);
});

test('a lost connection is E_DISCONNECTED, for calls in flight and after', { skip }, async () => {
  const sock = join(d!.dir, 'lost.sock');
  let release!: () => void;
  const hang = method(z.object({}).strict(), () => new Promise<never>(() => release()));
  const server = new RpcServer({ socketPath: sock, log: nullLogger, methods: { 'daemon.status': hang } });
  await server.listen();
  const c = await Banger.connect({ socket: sock, autostart: false });
  const inFlight = c.version().catch((e: unknown) => e);
  await new Promise<void>((r) => (release = r));
  await server.close();
  const lost = await inFlight;
  assert.ok(lost instanceof BangerError && lost.code === 'E_DISCONNECTED', String(lost));
  assert.equal(c.closed, true);
  await assert.rejects(c.status(), (e: unknown) => e instanceof BangerError && e.code === 'E_DISCONNECTED');
  await assert.rejects(Banger.connect({ socket: sock, autostart: false }), (e: unknown) => e instanceof BangerError && e.code === 'E_NO_DAEMON');
});
