import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { F, FrameDecoder, encodeFrame, type ExitInfo, type Frame } from '../../src/core/agent-proto.js';
import { defaultSources } from '../../src/guest/inject.js';
import { AgentConnection, type AgentSession } from '../../src/vms/agent-session.js';
import { connectUnix } from '../../src/vms/agent.js';
import { identityRequest, type GuestIdentity } from '../../src/vms/identity.js';
import { isRoot } from '../helpers/daemon.js';

/**
 * Protocol v2 of the guest agent, run on the host (--unix, --stdio) and driven by banger's own
 * host client (AgentConnection): every request, exec semantics, flow control, tar transfer,
 * malformed and truncated frames, and a client that disappears mid-stream.
 */
/** BANGER_TEST_AGENT: run these tests against another build (break-it checks). */
const AGENT = process.env.BANGER_TEST_AGENT ?? defaultSources().agentPath;
const skip = existsSync(AGENT) ? undefined : `agent binary ${AGENT} not built (npm run build)`;
let dir = '';
let sockPath = '';
let agent: ChildProcess | undefined;
let agentErr = '';

before(async () => {
  if (skip) return;
  dir = mkdtempSync(join(tmpdir(), 'banger-agent2-'));
  chmodSync(dir, 0o755); // the exec test runs as uid 65534 with this as its workdir
  sockPath = join(dir, 'agent.sock');
  agent = spawn(AGENT, ['--unix', sockPath], { stdio: ['ignore', 'ignore', 'pipe'] });
  agent.stderr!.on('data', (d) => (agentErr += d));
  for (let i = 0; i < 100 && !existsSync(sockPath); i++) await new Promise((r) => setTimeout(r, 20));
});
after(() => {
  agent?.kill('SIGKILL');
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const open = async () => AgentConnection.open(await connectUnix(sockPath), 'test', 5000);

interface Run {
  out: Buffer;
  err: Buffer;
  exit: ExitInfo;
}
/**
 * Runs a session to its end, acknowledging output (optionally slowly). `drive`, when given,
 * replaces the default stdin-then-EOF: it gets the session and a wait for stdout to match.
 */
async function run(
  c: AgentConnection,
  req: Record<string, unknown>,
  opts: { stdin?: Buffer; slowAckMs?: number; drive?: (s: AgentSession, outMatches: (re: RegExp) => Promise<void>) => Promise<void> } = {},
): Promise<Run> {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  let s: AgentSession | undefined;
  const owed: number[] = [];
  const ack = (n: number) => {
    if (!s) return owed.push(n);
    if (opts.slowAckMs) setTimeout(() => s!.consumed(n), opts.slowAckMs);
    else s.consumed(n);
  };
  const exit = await new Promise<ExitInfo>((resolve, reject) => {
    c.start(req, {
      onStdout: (b) => (out.push(Buffer.from(b)), ack(b.length)),
      onStderr: (b) => (err.push(Buffer.from(b)), ack(b.length)),
      onExit: resolve,
      onError: reject,
    })
      .then(async (sess) => {
        s = sess;
        for (const n of owed.splice(0)) ack(n);
        if (opts.drive) {
          const outMatches = async (re: RegExp) => {
            for (const deadline = Date.now() + 20_000; !re.test(Buffer.concat(out).toString()); await new Promise((r) => setTimeout(r, 10))) {
              if (Date.now() > deadline) throw new Error(`stdout never matched ${re}: ${JSON.stringify(Buffer.concat(out).toString())}`);
            }
          };
          return opts.drive(sess, outMatches);
        }
        if (opts.stdin) await sess.write(opts.stdin);
        sess.eof();
      })
      .catch(reject);
  });
  return { out: Buffer.concat(out), err: Buffer.concat(err), exit };
}

test('hello, health, ports, stat, unknown op; version 1 still served on another connection', { skip }, async () => {
  const c = await open();
  assert.equal(c.info.proto, 2);
  assert.equal(c.info.agent, 'banger-vsock-agent');
  const h = await c.request({ op: 'health' });
  assert.equal(h.ok, true);
  assert.equal(h.proto, 2);
  assert.ok(Array.isArray((await c.request({ op: 'ports' })).ports));
  assert.deepEqual(await c.request({ op: 'stat', path: dir }), {
    ok: true,
    exists: true,
    type: 'dir',
    mode: lstatSync(dir).mode & 0o7777,
    size: lstatSync(dir).size,
  });
  assert.deepEqual(await c.request({ op: 'stat', path: join(dir, 'nope') }), { ok: true, exists: false });
  assert.equal((await c.request({ op: 'stat', path: 'relative' })).ok, false);
  assert.deepEqual(await c.request({ op: 'shutdown' }), { ok: false, error: 'unknown op' });
  assert.match(String((await c.request({ op: 'exec', argv: 'sh' })).error), /argv/);
  const v1 = connect(sockPath);
  const line = await new Promise<string>((resolve) => {
    v1.on('data', (d) => resolve(d.toString()));
    v1.write('{"op":"health"}\n');
  });
  v1.destroy();
  assert.equal(JSON.parse(line).ok, true);
  c.close();
});

test('set-clock (agent 3): refused on a test channel, never touching the host clock; with --fake-clock it writes the time; bad times are refused', {
  skip,
}, async () => {
  const c = await open();
  assert.equal(c.info.version, '4');
  // This agent serves --unix: it is on a host, so it must not set the clock.
  const refused = await c.request({ op: 'set-clock', unixMs: Date.now() });
  assert.equal(refused.ok, false);
  assert.match(String(refused.error), /refused on a test channel/);
  c.close();
  const clock = join(dir, 'fake-clock');
  const sock2 = join(dir, 'agent-clock.sock');
  const a2 = spawn(AGENT, ['--unix', sock2, '--fake-clock', clock], { stdio: 'ignore' });
  try {
    for (let i = 0; i < 100 && !existsSync(sock2); i++) await new Promise((r) => setTimeout(r, 20));
    const c2 = await AgentConnection.open(await connectUnix(sock2), 'clock', 5000);
    const want = Date.now() + 3_600_000; // an hour ahead of this host
    const r = await c2.request({ op: 'set-clock', unixMs: want });
    assert.equal(r.ok, true, JSON.stringify(r));
    assert.equal(readFileSync(clock, 'utf8'), `${want}\n`);
    // stepMs: how far the clock moved (the agent's clock was this host's, an hour behind)
    assert.ok(Math.abs(Number(r.stepMs) - 3_600_000) < 60_000, `stepMs ${r.stepMs}`);
    for (const bad of [undefined, 'soon', 12.5, 42, -1, 1e20]) {
      const b = await c2.request({ op: 'set-clock', unixMs: bad });
      assert.equal(b.ok, false, `unixMs ${bad}: ${JSON.stringify(b)}`);
      assert.equal(readFileSync(clock, 'utf8'), `${want}\n`, `unixMs ${bad} changed the clock`);
    }
    // Older requests are answered as before on the same connection.
    assert.equal((await c2.request({ op: 'health' })).ok, true);
    c2.close();
  } finally {
    a2.kill('SIGKILL');
  }
});

test('identity (agent 4): every field is validated in the agent before anything changes; on a test channel a valid request is refused, the host untouched', {
  skip,
}, async () => {
  const c = await open();
  const key = join(dir, 'idkey');
  rmSync(key, { force: true });
  rmSync(`${key}.pub`, { force: true });
  assert.equal(spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]).status, 0);
  const id: GuestIdentity = {
    mac: '02:12:34:56:78:9a',
    ip: '10.99.0.5',
    prefixLen: 24,
    gateway: '10.99.0.1',
    hostname: 'not-this-host',
    machineId: 'a'.repeat(32),
    hostKey: { privatePem: readFileSync(key, 'utf8'), publicLine: readFileSync(`${key}.pub`, 'utf8').trim() },
  };
  const good = identityRequest(id, Buffer.alloc(32, 7), Date.now());
  const hostname = readFileSync('/proc/sys/kernel/hostname', 'utf8');
  const ok = await c.request(good);
  assert.deepEqual(ok, { ok: false, step: 'validate', error: 'identity: validate: refused on a test channel (the agent is not in a guest)' });
  const cases: Array<[Record<string, unknown>, RegExp]> = [
    [{ mac: '01:12:34:56:78:9a' }, /"mac" must be a unicast address/],
    [{ mac: '02:12:34:56:78' }, /"mac" must be six hex octets/],
    [{ mac: undefined }, /"mac" is required/],
    [{ ip: '10.99.0.256' }, /"ip" must be a dotted IPv4 address/],
    [{ ip: '10.99.0.255' }, /network or broadcast/],
    [{ gateway: '10.98.0.1' }, /"gateway" is not inside/],
    [{ gateway: '10.99.0.5' }, /are the same address/],
    [{ prefixLen: 31 }, /"prefixLen" must be 8..30/],
    [{ prefixLen: undefined }, /"prefixLen" must be 8..30/],
    [{ hostname: 'a'.repeat(64) }, /longer than 63/],
    [{ hostname: 'bad name' }, /only letters, digits/],
    [{ hostname: 'x\u00e9' }, /only letters, digits/],
    [{ hostname: 'end-.x' }, /ending in '-'/],
    [{ machineId: 'A'.repeat(32) }, /32 lowercase hex/],
    [{ machineId: '0'.repeat(32) }, /not be all zeros/],
    [{ seed: 'ab'.repeat(31) }, /"seed" must be 32..512 bytes/],
    [{ seed: 'zz'.repeat(40) }, /"seed" must be 32..512 bytes/],
    [{ seed: 'ab'.repeat(513) }, /"seed" must be 32..512 bytes/],
    [{ hostKey: id.hostKey.privatePem.replace('OPENSSH', 'RSA') }, /"hostKey" must be an OpenSSH private key/],
    [{ hostKey: id.hostKey.privatePem.replace('\n', '\n;rm -rf /\n') }, /outside base64/],
    [{ hostKey: id.hostKey.privatePem.trimEnd() }, /END line/],
    [{ hostKeyPub: 'ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ' }, /ssh-ed25519 public key line/],
    [{ hostKeyPub: `${id.hostKey.publicLine}\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI` }, /control character/],
    [{ unixMs: undefined }, /"unixMs" is required/],
  ];
  for (const [change, want] of cases) {
    const r = await c.request({ ...good, ...change });
    assert.equal(r.ok, false, JSON.stringify(change));
    assert.equal(r.step, 'validate', JSON.stringify(r));
    assert.match(String(r.error), want, `${JSON.stringify(change).slice(0, 80)} → ${JSON.stringify(r)}`);
  }
  // A malformed number is a request error, not a crash; the connection keeps serving.
  assert.match(String((await c.request({ ...good, prefixLen: 'x' })).error), /"prefixLen" must be an integer/);
  assert.equal((await c.request({ op: 'health' })).ok, true);
  assert.equal(readFileSync('/proc/sys/kernel/hostname', 'utf8'), hostname, 'the host keeps its name');
  c.close();
});

test('exec: exit codes 0, 7 and 128+9; env, workdir, user; a missing command is refused with 127', { skip }, async () => {
  const c = await open();
  assert.equal((await run(c, { op: 'exec', argv: ['true'] })).exit.code, 0);
  assert.equal((await run(c, { op: 'exec', argv: ['sh', '-c', 'exit 7'] })).exit.code, 7);
  assert.deepEqual((await run(c, { op: 'exec', argv: ['sh', '-c', 'kill -9 $$'] })).exit, { code: 137, signal: 9 });
  const r = await run(c, { op: 'exec', argv: ['sh', '-c', 'echo "$FOO|$(pwd)|$(id -u)|$HOME"'], env: ['FOO=bar baz'], workdir: dir, user: '65534' });
  assert.match(r.out.toString(), new RegExp(`^bar baz\\|${dir}\\|65534\\|`));
  await assert.rejects(
    c.start({ op: 'exec', argv: ['/nonexistent/cmd'] }, { onStdout() {}, onStderr() {}, onExit() {}, onError() {} }),
    (e: any) => e.details?.exitCode === 127 && /nonexistent/.test(e.message),
  );
  await assert.rejects(
    c.start({ op: 'exec', argv: ['true'], workdir: '/nonexistent-dir' }, { onStdout() {}, onStderr() {}, onExit() {}, onError() {} }),
    (e: any) => e.details?.exitCode === 126,
  );
  await assert.rejects(
    c.start({ op: 'exec', argv: ['true'], user: 'no-such-user-x' }, { onStdout() {}, onStderr() {}, onExit() {}, onError() {} }),
    /unknown user/,
  );
  c.close();
});

test('exec: stdin piped; all 256 byte values round-trip on stdout and on stderr', { skip }, async () => {
  const c = await open();
  const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
  const payload = Buffer.concat(Array.from({ length: 64 }, () => all));
  const r = await run(c, { op: 'exec', argv: ['sh', '-c', 'tee /dev/stderr'] }, { stdin: payload });
  assert.equal(r.exit.code, 0);
  assert.ok(r.out.equals(payload), 'stdout differs');
  assert.ok(r.err.equals(payload), 'stderr differs');
  c.close();
});

test('flow control: 100 MiB with a slow reader arrives whole while the agent stays small; 4 MiB of stdin too', { skip }, async () => {
  const c = await open();
  const r = await run(c, { op: 'exec', argv: ['sh', '-c', 'head -c 104857600 /dev/urandom | tee /dev/stderr | sha256sum >&2'] }, { slowAckMs: 1 });
  // stderr is the data, then sha256sum's line: the hash is the last 64 hex digits before "  -\n"
  // (a first-match search could start inside the data when it ends in hex digits: 1 run in 16).
  const text = r.err.subarray(r.err.length - 200).toString('latin1');
  const want = /([0-9a-f]{64}) {2}-\n$/.exec(text)![1]!;
  const data = r.err.subarray(0, r.err.length - (want.length + 4));
  assert.equal(data.length, 104857600);
  assert.equal(createHash('sha256').update(data).digest('hex'), want);
  const hwm = Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${agent!.pid}/status`, 'utf8'))![1]);
  assert.ok(hwm < 32 * 1024, `agent peak RSS ${hwm} kB`);
  const big = Buffer.alloc(4 << 20, 0x5a);
  const w = await run(c, { op: 'exec', argv: ['wc', '-c'] }, { stdin: big });
  assert.equal(w.out.toString().trim(), String(big.length));
  c.close();
});

test('two sessions at once on one connection; a tty session sees a pty, resize and signals', { skip }, async () => {
  const c = await open();
  // Each session waits for the other to have started: run one after the other, the first would
  // wait for the second until its timeout (exit 124) instead of printing.
  const both = (me: string, other: string) => [
    'timeout',
    '30',
    'sh',
    '-c',
    `touch ${dir}/${me}; while [ ! -e ${dir}/${other} ]; do sleep 0.02; done; echo ${me}`,
  ];
  const [a, b] = await Promise.all([run(c, { op: 'exec', argv: both('a', 'b') }), run(c, { op: 'exec', argv: both('b', 'a') })]);
  assert.deepEqual([a.exit.code, b.exit.code], [0, 0], 'sessions ran one after the other');
  assert.equal(a.out.toString() + b.out.toString(), 'a\nb\n');
  // Resize once the pty exists, then let the script read its size (frames stay in order).
  const t = await run(
    c,
    { op: 'exec', argv: ['sh', '-c', 'stty -echo; tty; read go; stty size'], tty: true, rows: 30, cols: 100 },
    {
      drive: async (s, outMatches) => {
        await outMatches(/\/dev\/pts\/\d+\r\n/);
        s.resize(40, 132);
        await s.write(Buffer.from('go\n'));
      },
    },
  );
  assert.match(t.out.toString(), /^\/dev\/pts\/\d+\r\n40 132\r\n$/);
  // The signal once the trap is set (it prints ready after), never before it.
  const sig = await run(
    c,
    { op: 'exec', argv: ['sh', '-c', 'trap "exit 42" INT; echo ready; while :; do sleep 0.05; done'] },
    {
      drive: async (s, outMatches) => {
        await outMatches(/ready/);
        s.signal(2);
      },
    },
  );
  assert.equal(sig.exit.code, 42);
  c.close();
});

test('tar-out / tar-in: a tree with a symlink, a setuid file and mtimes survives; an escaping entry is refused', {
  skip: skip ?? (isRoot() ? undefined : 'needs root (owners, setuid)'),
}, async () => {
  const c = await open();
  const src = join(dir, 'src');
  mkdirSync(join(src, 'sub'), { recursive: true });
  writeFileSync(join(src, 'sub', 'f'), 'hello');
  writeFileSync(join(src, 'suid'), 'x');
  spawnSync('chown', ['1234:2345', join(src, 'suid')]); // before chmod: chown clears setuid
  chmodSync(join(src, 'suid'), 0o4755);
  symlinkSync('sub/f', join(src, 'link'));
  utimesSync(join(src, 'sub', 'f'), 1000000000, 1000000000);
  const tar = await run(c, { op: 'tar-out', path: src + '/' });
  assert.equal(tar.exit.code, 0, tar.err.toString());
  const dst = join(dir, 'dst');
  mkdirSync(dst);
  const back = await run(c, { op: 'tar-in', path: dst }, { stdin: tar.out });
  assert.equal(back.exit.code, 0, back.err.toString());
  assert.equal(readFileSync(join(dst, 'src', 'sub', 'f'), 'utf8'), 'hello');
  assert.equal(readlinkSync(join(dst, 'src', 'link')), 'sub/f');
  const s = lstatSync(join(dst, 'src', 'suid'));
  assert.equal(s.mode & 0o7777, 0o4755);
  assert.deepEqual([s.uid, s.gid], [1234, 2345]);
  assert.equal(lstatSync(join(dst, 'src', 'sub', 'f')).mtimeMs, 1000000000000);
  assert.match(String((await c.request({ op: 'tar-in', path: join(dst, 'src', 'sub', 'f') })).error ?? ''), /not a directory/);
  await assert.rejects(c.start({ op: 'tar-out', path: join(dir, 'missing') }, { onStdout() {}, onStderr() {}, onExit() {}, onError() {} }), /No such file/);
  // A symlink to outside, then a file through it: tar must not write outside the destination.
  const evil = join(dir, 'evil');
  mkdirSync(join(evil, 'x'), { recursive: true });
  mkdirSync(join(dir, 'outside'));
  symlinkSync(join(dir, 'outside'), join(evil, 'x', 'l'));
  mkdirSync(join(dir, 'stage', 'x', 'l'), { recursive: true });
  writeFileSync(join(dir, 'stage', 'x', 'l', 'pwned'), 'p');
  const craftedPath = join(dir, 'crafted.tar');
  assert.equal(spawnSync('tar', ['-c', '-f', craftedPath, '-C', evil, 'x/l']).status, 0);
  assert.equal(spawnSync('tar', ['-r', '-f', craftedPath, '-C', join(dir, 'stage'), 'x/l/pwned']).status, 0);
  const land = join(dir, 'land');
  mkdirSync(land);
  const bad = await run(c, { op: 'tar-in', path: land }, { stdin: readFileSync(craftedPath) });
  assert.notEqual(bad.exit.code, 0);
  assert.match(bad.err.toString(), /pwned/);
  assert.equal(existsSync(join(dir, 'outside', 'pwned')), false);
  c.close();
});

/** A raw v2 client for malformed input. */
async function raw(): Promise<{ sock: Socket; frames: Frame[]; closed: Promise<void> }> {
  const sock = connect(sockPath);
  sock.on('error', () => {}); // EPIPE after the agent closed a broken connection
  await new Promise((r) => sock.once('connect', r));
  const frames: Frame[] = [];
  const dec = new FrameDecoder();
  sock.on('data', (d) => dec.push(d, (f) => frames.push({ ...f, payload: Buffer.from(f.payload) })));
  const closed = new Promise<void>((r) => sock.on('close', () => r()));
  return { sock, frames, closed };
}
const hello = encodeFrame(F.Hello, 0, '{"proto":2}');
const within = (p: Promise<void>, ms = 3000) => Promise.race([p, new Promise<void>((_, rej) => setTimeout(() => rej(new Error('connection not closed')), ms))]);

test('malformed frames get an ERROR frame and a closed connection; the agent keeps serving', { skip }, async () => {
  const header = (len: number, type = F.Request) => Buffer.from([len >>> 24, (len >>> 16) & 255, (len >>> 8) & 255, len & 255, type, 0, 0, 0, 1]);
  const cases: Array<[string, Buffer]> = [
    ['no hello first', encodeFrame(F.Request, 1, '{"op":"health"}')],
    ['length below the header', Buffer.concat([hello, Buffer.from([0, 0, 0, 2, 1, 0])])],
    ['length above the maximum', Buffer.concat([hello, header(5 + 65537)])],
    ['unknown frame type', Buffer.concat([hello, encodeFrame(99, 1)])],
    ['stdout from the host', Buffer.concat([hello, encodeFrame(F.Stdout, 1, 'x')])],
    ['request on stream 0', Buffer.concat([hello, encodeFrame(F.Request, 0, '{"op":"health"}')])],
    ['wrong protocol version', encodeFrame(F.Hello, 0, '{"proto":3}')],
  ];
  for (const [what, bytes] of cases) {
    const r = await raw();
    r.sock.write(bytes);
    await within(r.closed).catch((e) => assert.fail(`${what}: ${e.message}`));
    assert.ok(
      r.frames.some((f) => f.type === F.Error),
      `${what}: no ERROR frame`,
    );
  }
  // Bad JSON is a per-request error, not a protocol error.
  const r = await raw();
  r.sock.write(Buffer.concat([hello, encodeFrame(F.Request, 5, '{"op":'), encodeFrame(F.Request, 6, '{"op":"health"}')]));
  for (let i = 0; i < 100 && r.frames.length < 3; i++) await new Promise((res) => setTimeout(res, 20));
  assert.deepEqual(
    r.frames.map((f) => [f.type, f.stream]),
    [
      [F.Hello, 0],
      [F.Reply, 5],
      [F.Reply, 6],
    ],
  );
  assert.match(r.frames[1]!.payload.toString(), /bad request/);
  // Stdin beyond the granted credit.
  r.sock.write(encodeFrame(F.Request, 7, '{"op":"exec","argv":["sleep","5"]}'));
  const chunk = Buffer.alloc(65536);
  // 16 x 64 KiB: more than the window plus what the (unread) pipe absorbs.
  for (let i = 0; i < 16; i++) r.sock.write(encodeFrame(F.Stdin, 7, chunk));
  await within(r.closed);
  // The ERROR frame may be lost here: Node drops a socket whose write failed (EPIPE) before
  // reading what was left, so the agent's log is the witness.
  for (let i = 0; i < 150 && !/stdin beyond the granted credit/.test(agentErr); i++) await new Promise((res) => setTimeout(res, 20)); // stderr lags the socket
  assert.match(agentErr, /protocol error: stdin beyond the granted credit/);
  // Truncated frame, then the client goes away.
  const t = await raw();
  t.sock.write(Buffer.concat([hello, encodeFrame(F.Request, 1, '{"op":"health"}').subarray(0, 12)]));
  await new Promise((res) => setTimeout(res, 100));
  t.sock.destroy();
  const c = await open();
  assert.equal((await c.request({ op: 'health' })).ok, true);
  c.close();
  assert.equal(agent!.exitCode, null);
});

test('credit: a host that returns none gets exactly one window of output, then exactly what it grants', { skip }, async () => {
  const r = await raw();
  r.sock.write(Buffer.concat([hello, encodeFrame(F.Request, 3, '{"op":"exec","argv":["head","-c","10000000","/dev/zero"]}')]));
  const got = () => r.frames.filter((f) => f.type === F.Stdout).reduce((n, f) => n + f.payload.length, 0);
  await new Promise((res) => setTimeout(res, 1000));
  assert.equal(got(), 262144);
  r.sock.write(encodeFrame(F.Credit, 3, Buffer.from([0, 0x10, 0, 0]))); // 1 MiB
  await new Promise((res) => setTimeout(res, 1000));
  assert.equal(got(), 262144 + (1 << 20));
  r.sock.destroy();
});

test('a client that disappears mid-stream: its sessions are killed, others go on', { skip }, async () => {
  const c1 = await open();
  const c2 = await open();
  const pidFile = join(dir, 'yes.pid');
  let started!: () => void;
  const going = new Promise<void>((r) => (started = r));
  // sleep writes nothing: only the agent's kill can end it (a writer would die of SIGPIPE anyway).
  void c1.start(
    { op: 'exec', argv: ['sh', '-c', `echo $$ > ${pidFile}; echo started; exec sleep 1000`] },
    { onStdout: () => started(), onStderr() {}, onExit() {}, onError() {} },
  );
  await going;
  const pid = Number(readFileSync(pidFile, 'utf8'));
  const other = run(c2, { op: 'exec', argv: ['sh', '-c', 'sleep 0.5; echo still'] });
  c1.close();
  let alive = true;
  for (let i = 0; i < 100 && alive; i++) {
    await new Promise((r) => setTimeout(r, 20));
    alive = spawnSync('kill', ['-0', String(pid)]).status === 0 && !/State:\s+Z/.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  }
  assert.equal(alive, false, 'the session process outlived its client');
  assert.equal((await other).out.toString(), 'still\n');
  c2.close();
});

test('--stdio serves protocol v2 (the Firecracker stand-in uses it)', { skip }, async () => {
  const p = spawn(AGENT, ['--stdio'], { stdio: ['pipe', 'pipe', 'ignore'] });
  const { Duplex } = await import('node:stream');
  const duplex = Duplex.from({ readable: p.stdout!, writable: p.stdin! });
  const c = await AgentConnection.open(duplex, 'stdio', 5000);
  const r = await run(c, { op: 'exec', argv: ['sh', '-c', 'echo out; echo err >&2; exit 3'] });
  assert.deepEqual([r.out.toString(), r.err.toString(), r.exit.code], ['out\n', 'err\n', 3]);
  c.close();
  p.kill('SIGKILL');
});
