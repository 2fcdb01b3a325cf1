import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { createConnection, createServer, type Server } from 'node:net';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaultSources } from '../../src/guest/inject.js';
import { missingTools } from '../helpers/daemon.js';
import { cleanupAll, createNetns, nsRun } from '../helpers/netns.js';

/**
 * The guest agent, run on the host against test channels: --stdio (pipes), --unix (a
 * listening socket, several clients), --channel (a pty made by socat, standing in for the
 * virtio-serial port, including the reopen after the other side hangs up).
 */
const AGENT = defaultSources().agentPath;
const SRC_DIR = new URL('../../../src/guest/agent/', import.meta.url).pathname;
const SRCS = readdirSync(SRC_DIR)
  .filter((f) => f.endsWith('.c'))
  .map((f) => join(SRC_DIR, f));
const noAgent = existsSync(AGENT) ? undefined : `agent binary ${AGENT} not built (npm run build)`;

/** Reads newline-delimited JSON from a stream; next() resolves with the next parsed line. */
class Lines {
  private buf = '';
  private queue: string[] = [];
  private waiters: ((l: string) => void)[] = [];
  constructor(stream: NodeJS.ReadableStream) {
    stream.on('data', (d: Buffer) => {
      this.buf += d.toString('utf8');
      let i;
      while ((i = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, i).replace(/\r$/, '');
        this.buf = this.buf.slice(i + 1);
        const w = this.waiters.shift();
        if (w) w(line);
        else this.queue.push(line);
      }
    });
  }
  next(timeoutMs = 10000): Promise<any> {
    const l = this.queue.shift();
    if (l !== undefined) return Promise.resolve(JSON.parse(l));
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('timed out waiting for an agent response')), timeoutMs);
      this.waiters.push((line) => {
        clearTimeout(t);
        try {
          resolve(JSON.parse(line));
        } catch (e) {
          reject(new Error(`agent sent a line that is not JSON: ${line}`));
        }
      });
    });
  }
}

function startAgent(args: string[]): ChildProcess {
  return spawn(AGENT, args, { stdio: ['pipe', 'pipe', 'pipe'] });
}

async function stopProc(p: ChildProcess | undefined): Promise<void> {
  if (!p || p.exitCode !== null || p.signalCode !== null) return;
  const done = new Promise((r) => p.once('exit', r));
  p.kill('SIGKILL');
  await done;
}

function listen(server: Server, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => resolve((server.address() as { port: number }).port));
  });
}

test('--stdio ports: an IPv6 listener ([::1], /proc/net/tcp6), in a namespace of the test whose loopback has IPv6 on', { skip: noAgent }, async () => {
  // The host may have IPv6 off; a namespace of our own has it by our say-so.
  const ns = createNetns('agent6');
  try {
    nsRun(ns, ['sysctl', '-qw', 'net.ipv6.conf.lo.disable_ipv6=0']);
    nsRun(ns, ['ip', 'link', 'set', 'lo', 'up']);
    const code = "const s = require('node:net').createServer().listen(0, '::1', () => console.log(s.address().port));";
    const listener = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
    const agent = spawn('ip', ['netns', 'exec', ns, AGENT, '--stdio'], { stdio: ['pipe', 'pipe', 'pipe'] });
    try {
      const port6 = Number((await new Lines(listener.stdout!).next()) as number);
      assert.ok(port6 > 0);
      const lines = new Lines(agent.stdout!);
      agent.stdin!.write('{"op":"ports"}\n');
      const p = await lines.next();
      assert.equal(p.ok, true);
      assert.ok(
        p.ports.some((x: any) => x.proto === 'tcp' && x.port === port6 && x.address === '::1'),
        `[::1]:${port6} in ${JSON.stringify(p.ports)}`,
      );
    } finally {
      await stopProc(agent);
      await stopProc(listener);
    }
  } finally {
    cleanupAll();
  }
});

test('compiles warning-free as a static binary (gcc -static -O2 -Wall -Wextra -Werror)', { skip: missingTools('gcc', 'file') }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'banger-agent-cc-'));
  try {
    const out = join(dir, 'agent');
    const r = spawnSync('gcc', ['-static', '-O2', '-Wall', '-Wextra', '-Werror', '-o', out, ...SRCS], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const file = spawnSync('file', ['-b', out], { encoding: 'utf8' }); // scripts/install-deps.sh installs file
    assert.equal(file.status, 0, `file(1): ${file.error?.message ?? file.stderr}`);
    assert.match(file.stdout, /statically linked/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('--stdio: health, ports (sees a listener the test opens), unknown op, bad input, keeps serving', { skip: noAgent }, async () => {
  const server4 = createServer();
  const agent = startAgent(['--stdio']);
  try {
    const port4 = await listen(server4, '127.0.0.1');
    const lines = new Lines(agent.stdout!);
    const send = (s: string) => agent.stdin!.write(s);

    send('{"op":"health"}\n');
    const h = await lines.next();
    assert.equal(h.ok, true);
    assert.equal(h.agent, 'banger-vsock-agent');
    assert.equal(h.version, '4');
    assert.equal(h.proto, 2);
    assert.equal(h.hostname, hostname());
    assert.ok(Number.isInteger(h.uptimeSeconds) && h.uptimeSeconds >= 0);

    send('{"op":"ports"}\n');
    const p = await lines.next();
    assert.equal(p.ok, true);
    assert.ok(Array.isArray(p.ports));
    assert.ok(
      p.ports.some((x: any) => x.proto === 'tcp' && x.port === port4 && x.address === '127.0.0.1'),
      `127.0.0.1:${port4} in ${JSON.stringify(p.ports)}`,
    );

    // after the listener closes, it is gone from the list
    await new Promise((r) => server4.close(r));
    send('{"op":"ports"}\n');
    const p2 = await lines.next();
    assert.equal(
      p2.ports.some((x: any) => x.port === port4 && x.address === '127.0.0.1'),
      false,
    );

    send('{"op":"reboot"}\n');
    assert.deepEqual(await lines.next(), { ok: false, error: 'unknown op' });
    for (const bad of ['not json', '{"op":42}', '{"op":"health"', '[]', '{"op":"health"} trailing', '{}']) {
      send(bad + '\n');
      assert.deepEqual(await lines.next(), { ok: false, error: 'bad request' }, bad);
    }
    send('{"op":"' + 'x'.repeat(10000) + '"}\n');
    assert.deepEqual(await lines.next(), { ok: false, error: 'request too long' });
    // requests split across writes, extra members and whitespace, two requests in one write
    send('{"id": 7, "op"');
    await new Promise((r) => setTimeout(r, 50));
    send(' : "health", "args": {"a": [1, true, null]}}\n{"op":"health"}\n');
    assert.equal((await lines.next()).ok, true);
    assert.equal((await lines.next()).ok, true);
    assert.equal(agent.exitCode, null, 'agent still running after bad requests');

    // EOF on stdin ends the agent cleanly
    const exited = new Promise<number | null>((r) => agent.once('exit', (c) => r(c)));
    agent.stdin!.end();
    assert.equal(await exited, 0);
  } finally {
    await stopProc(agent);
    server4.close();
  }
});

test('--unix: serves several clients at once', { skip: noAgent }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'banger-agent-unix-'));
  const sock = join(dir, 'agent.sock');
  const agent = startAgent(['--unix', sock]);
  const clients: ReturnType<typeof createConnection>[] = [];
  try {
    const once = () =>
      new Promise<{ c: ReturnType<typeof createConnection>; lines: Lines }>((resolve, reject) => {
        const c = createConnection(sock);
        clients.push(c);
        c.once('error', reject);
        c.once('connect', () => resolve({ c, lines: new Lines(c) }));
      });
    // The socket file appears at bind(), before listen(): until then a connect is refused.
    const connect = async () => {
      for (let i = 0; ; i++) {
        try {
          return await once();
        } catch (e) {
          const code = (e as NodeJS.ErrnoException).code;
          if (i >= 100 || (code !== 'ECONNREFUSED' && code !== 'ENOENT')) throw e;
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    };
    const a = await connect();
    const b = await connect();
    b.c.write('{"op":"ports"}\n');
    a.c.write('{"op":"health"}\n');
    assert.equal((await a.lines.next()).agent, 'banger-vsock-agent');
    assert.ok(Array.isArray((await b.lines.next()).ports));
    a.c.destroy(); // one client leaving does not disturb the other
    b.c.write('{"op":"nope"}\n');
    assert.deepEqual(await b.lines.next(), { ok: false, error: 'unknown op' });
  } finally {
    for (const c of clients) c.destroy();
    await stopProc(agent);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('--channel: a pty port is served, and reopened after the other side hangs up', { skip: noAgent ?? missingTools('socat') }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'banger-agent-pty-'));
  const port = join(dir, 'port');
  const agent = startAgent(['--channel', port]);
  let stderr = '';
  agent.stderr!.on('data', (d) => (stderr += d));
  let host: ChildProcess | undefined;
  const openHostSide = () => {
    host = spawn('socat', [`PTY,link=${port},raw,echo=0`, 'STDIO'], { stdio: ['pipe', 'pipe', 'pipe'] });
    return new Lines(host.stdout!);
  };
  try {
    // the port does not exist yet: the agent keeps looking instead of exiting
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(agent.exitCode, null);
    let lines = openHostSide();
    host!.stdin!.write('{"op":"health"}\n');
    assert.equal((await lines.next(15000)).ok, true);

    // the host side goes away (HUP on the pty); a new one appears at the same path
    await stopProc(host);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(agent.exitCode, null, 'agent survives the hang-up');
    lines = openHostSide();
    host!.stdin!.write('{"op":"ports"}\n');
    const p = await lines.next(15000);
    assert.equal(p.ok, true);
    assert.ok(Array.isArray(p.ports));
    assert.match(stderr, /opened/);
  } finally {
    await stopProc(host);
    await stopProc(agent);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('rejects unknown options with usage and exit 2', { skip: noAgent }, () => {
  const r = spawnSync(AGENT, ['--bogus'], { encoding: 'utf8' });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /usage: banger-vsock-agent/);
  assert.equal(spawnSync(AGENT, ['--version'], { encoding: 'utf8' }).stdout.trim(), 'banger-vsock-agent 4');
});
