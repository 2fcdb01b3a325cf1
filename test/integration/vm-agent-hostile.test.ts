import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter, once } from 'node:events';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Logger } from '../../src/core/log.js';
import { defaultSources } from '../../src/guest/inject.js';
import { RpcServer } from '../../src/rpc/server.js';
import { agentPool, connectUnix, setAgentLog } from '../../src/vms/agent.js';
import { vmMethods } from '../../src/daemon/handlers/vms.js';
import type { VmService } from '../../src/vms/service.js';
import { HostileAgentPeer } from '../helpers/hostile-agent-peer.js';

/**
 * A hostile guest agent (test/helpers/hostile-agent-peer.ts, protocol v2 on a Unix socket)
 * against the daemon's real vm.* handlers on an RpcServer in this process (so this process is
 * "bangerd": its RSS is the daemon's) and the built CLI. VM 'bad' is served by the hostile
 * peer, VM 'other' by the real C agent (its set-clock writes a file, --fake-clock). The peer serves good sessions on every new connection,
 * so "the next exec works" proves the pool dropped the broken connection and reconnected.
 */
const AGENT = defaultSources().agentPath;
const BANGER = new URL('../../../bin/banger', import.meta.url).pathname;
const skip = existsSync(AGENT) ? undefined : 'agent not built (npm run build)';
/** How much the daemon's RSS may grow while a guest floods output past its credit. */
const RSS_CAP = 64 << 20;
let dir = '';
let agent: ChildProcess | undefined;
let peer: HostileAgentPeer | undefined;
let server: RpcServer | undefined;
let env: NodeJS.ProcessEnv = {};
let clockFile = '';

interface LogRecord {
  level: string;
  msg: string;
  fields: Record<string, unknown>;
}
const logs: LogRecord[] = [];
const logged = new EventEmitter();
const capture: Logger = {
  debug: (msg, fields = {}) => record('debug', msg, fields),
  info: (msg, fields = {}) => record('info', msg, fields),
  warn: (msg, fields = {}) => record('warn', msg, fields),
  error: (msg, fields = {}) => record('error', msg, fields),
  child: () => capture,
};
function record(level: string, msg: string, fields: Record<string, unknown>): void {
  const r = { level, msg, fields };
  logs.push(r);
  logged.emit('log', r);
}
/** Resolves with the first log record (from now on) that `match` accepts. */
function waitLog(match: (r: LogRecord) => boolean): Promise<LogRecord> {
  return new Promise((resolve) => {
    const on = (r: LogRecord) => {
      if (!match(r)) return;
      logged.off('log', on);
      resolve(r);
    };
    logged.on('log', on);
  });
}
const closedWith = (re: RegExp) => (r: LogRecord) =>
  r.msg === 'agent connection closed' && String(r.fields.agent).includes('bad#') && re.test(String(r.fields.reason));

before(async () => {
  if (skip) return;
  dir = mkdtempSync(join(tmpdir(), 'banger-agent-hostile-'));
  const goodSock = join(dir, 'agent.sock');
  clockFile = join(dir, 'other-clock');
  // --fake-clock: set-clock writes the time to this file (the agent runs on this host).
  agent = spawn(AGENT, ['--unix', goodSock, '--fake-clock', clockFile], { stdio: 'ignore' });
  for (let i = 0; i < 100 && !existsSync(goodSock); i++) await new Promise((r) => setTimeout(r, 20));
  peer = await HostileAgentPeer.start(join(dir, 'hostile.sock'));
  const sockets: Record<string, string> = { bad: peer.path, other: goodSock };
  const svc = {
    get: (name: string) => ({ name, id: `id-${name}`, vmm: 'qemu' }),
    resumeIfPaused: async () => undefined, // never paused here (vms/pause.ts)
    observe: async () => ({ running: true }),
    driver: () => ({ openAgentStream: (vm: { name: string }) => connectUnix(sockets[vm.name]!) }),
    handle: (vm: { id: string; name: string }) => ({ id: vm.id, name: vm.name }),
  } as unknown as VmService;
  setAgentLog(capture);
  server = new RpcServer({ socketPath: join(dir, 'd.sock'), log: capture, methods: vmMethods(svc) });
  await server.listen();
  env = { ...process.env, BANGER_SOCKET: join(dir, 'd.sock'), BANGER_ROOT: join(dir, 'root') };
});
after(async () => {
  agentPool.closeAll();
  await server?.close();
  await peer?.close();
  agent?.kill('SIGKILL');
  if (dir) rmSync(dir, { recursive: true, force: true });
});

interface Cli {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  /** Resolves when the CLI exited, with its code (null when killed by a signal). */
  exited: Promise<number | null>;
}
/** The built CLI. `readStdout: false` leaves its stdout pipe unread (a reader that stopped). */
function cli(args: string[], opts: { readStdout?: boolean } = {}): Cli {
  const child = spawn(process.execPath, [BANGER, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  if (opts.readStdout !== false) child.stdout!.on('data', (b) => (out += b));
  child.stderr!.on('data', (b) => (err += b));
  // A hang guard only (the assertions wait on events): a CLI that never ends is killed, and
  // the test then fails on its exit code.
  const guard = setTimeout(() => child.kill('SIGKILL'), 60_000);
  const exited = new Promise<number | null>((r) => child.on('close', (code) => (clearTimeout(guard), r(code))));
  return { child, stdout: () => out, stderr: () => err, exited };
}
async function execOk(vm: string, word: string): Promise<void> {
  const c = cli(['vm', 'exec', vm, '--', 'echo', word]);
  const code = await c.exited;
  assert.equal(code, 0, `vm exec ${vm} after the attack: ${c.stderr()}`);
  assert.equal(c.stdout(), `${word}\n`);
}
/** Resolves when RSS exceeds `limit`; also records the peak. Stop it with `stop()`. */
function rssWatch(limit: number) {
  let peak = process.memoryUsage().rss;
  let timer: NodeJS.Timeout | undefined;
  const over = new Promise<'over'>((resolve) => {
    timer = setInterval(() => {
      peak = Math.max(peak, process.memoryUsage().rss);
      if (peak > limit) resolve('over');
    }, 10);
  });
  return { over, stop: () => clearInterval(timer), peak: () => peak };
}

test('a guest flooding output past its credit to a client that stopped reading: its connection is closed with a logged reason, daemon RSS stays under +64 MiB, other VMs and the next exec work', {
  skip,
  timeout: 120_000,
}, async () => {
  await execOk('other', 'warm'); // the real agent's connection is open before the flood
  const base = process.memoryUsage().rss;
  const watch = rssWatch(base + RSS_CAP);
  const closed = waitLog(closedWith(/credit/));
  // `vm exec bad -- flood | sleep`: the CLI's stdout is a pipe nobody reads.
  const flood = cli(['vm', 'exec', 'bad', '--', 'flood'], { readStdout: false });
  const first = await Promise.race([closed.then(() => 'closed' as const), watch.over]);
  watch.stop();
  const grew = watch.peak() - base;
  console.log(
    `# credit flood: the peer wrote ${(peer!.floodBytes / 1048576).toFixed(1)} MiB; daemon RSS peak ${(grew / 1048576).toFixed(1)} MiB above the baseline (cap ${RSS_CAP >> 20} MiB)`,
  );
  assert.equal(
    first,
    'closed',
    `the daemon's RSS passed baseline + ${RSS_CAP >> 20} MiB before the flooding connection was closed (peer wrote ${peer!.floodBytes} bytes)`,
  );
  assert.ok(grew < RSS_CAP, `RSS grew ${grew} bytes`);
  const rec = logs.find(closedWith(/credit/))!;
  assert.equal(rec.level, 'warn');
  assert.match(String(rec.fields.reason), /stream \d+: the agent sent output past the 262144-byte credit window/);
  // Another VM's channel keeps working, and so does the flooded VM's next exec (new connection).
  const conns = peer!.connections;
  await execOk('other', 'still-here');
  await execOk('bad', 'recovered');
  assert.equal(peer!.connections, conns + 1, 'the pool opened a new connection to the flooded VM');
  // The stopped reader, once it reads again, ends by itself with the reason.
  flood.child.stdout!.resume();
  assert.equal(await flood.exited, 1);
  assert.match(flood.stderr(), /credit window/);
});

for (const [kind, reason] of [
  ['error-ffff', /the agent reported a protocol error: \uFFFD+…/],
  ['oversized', /frame length 65542 out of range/],
  ['truncated', /agent channel closed/],
  ['bad-json', /invalid JSON/],
] as const) {
  test(`a guest agent sending ${kind === 'error-ffff' ? 'an ERROR frame of 65,536 0xFF bytes' : kind === 'bad-json' ? 'a REPLY that is not JSON' : `a ${kind} frame`}: the CLI ends with an error, the next exec on that VM succeeds`, {
    skip,
    timeout: 120_000,
  }, async () => {
    const closed = waitLog(closedWith(reason));
    const conns = peer!.connections;
    const c = cli(['vm', 'exec', 'bad', '--', kind]);
    assert.equal(await c.exited, 1, `exit code; stderr: ${c.stderr()}`);
    assert.match(c.stderr(), /^error: /m);
    // Whatever the guest sent, what reaches the user's terminal is bounded and has no control bytes.
    assert.ok(c.stderr().length < 4096, `stderr of ${c.stderr().length} chars`);
    assert.doesNotMatch(c.stderr(), /[\x00-\x08\x0b-\x1f\x7f]/);
    const rec = await closed;
    assert.ok(String(rec.fields.reason).length <= 2048);
    await execOk('bad', `after-${kind}`);
    assert.equal(peer!.connections, conns + 1, 'the next exec ran on a new connection');
    await execOk('other', `other-after-${kind}`);
  });
}

test('a CLI whose stream dies (the agent connection goes mid-command) ends by itself with an error', { skip, timeout: 120_000 }, async () => {
  const c = cli(['vm', 'exec', 'bad', '--', 'hang']);
  await new Promise<void>((resolve) => c.child.stdout!.on('data', () => c.stdout().includes('ready') && resolve()));
  agentPool.closeAll(); // the daemon loses the VM's agent connection while the command runs
  assert.equal(await c.exited, 1);
  assert.match(c.stderr(), /error: .*agent connection closed/);
  await execOk('bad', 'after-drop');
});

for (const sig of ['SIGTERM', 'SIGINT'] as const) {
  test(`a CLI given ${sig} twice ends even though the guest ignores the first (forwarded to it)`, { skip, timeout: 120_000 }, async () => {
    const c = cli(['vm', 'exec', 'bad', '--', 'hang']);
    await new Promise<void>((resolve) => c.child.stdout!.on('data', () => c.stdout().includes('ready') && resolve()));
    const forwarded = once(peer!, 'signal');
    const closedStream = once(peer!, 'close-stream');
    c.child.kill(sig);
    const [signo] = (await forwarded) as [number];
    assert.equal(signo, sig === 'SIGTERM' ? 15 : 2, 'the first signal reached the guest');
    assert.equal(c.child.exitCode, null, 'the CLI still runs: the guest ignored the signal');
    c.child.kill(sig);
    assert.equal(await c.exited, sig === 'SIGTERM' ? 143 : 130, c.stderr());
    assert.match(c.stderr(), new RegExp(`second ${sig}: abandoning the command`));
    await closedStream; // bangerd told the agent to kill the process group
  });
}

test("the daemon sets the guest clock when it opens a VM's agent connection, before the first command; an agent that predates set-clock is simply not set", {
  skip,
  timeout: 120_000,
}, async () => {
  agentPool.closeAll(); // fresh connections for both VMs
  rmSync(clockFile, { force: true });
  const t0 = Date.now();
  await execOk('other', 'clocked');
  const t1 = Date.now();
  const set = Number(readFileSync(clockFile, 'utf8'));
  assert.ok(set >= t0 && set <= t1, `the real agent was given ${set}, outside [${t0}, ${t1}]`);
  rmSync(clockFile);
  await execOk('other', 'again');
  assert.ok(!existsSync(clockFile), 'a second contact within a minute does not set it again');

  // An agent that predates set-clock ('unknown op', as an image built before it answers):
  // exec works, the clock is not set (debug log), and it is not asked again on that connection.
  peer!.answerSetClock = 'unknown';
  const notSet = waitLog((r) => r.msg === 'guest clock not set' && /predates set-clock/.test(String(r.fields.error)));
  let from = peer!.requests.length;
  await execOk('bad', 'old-agent');
  await execOk('bad', 'old-agent-again');
  assert.deepEqual(
    peer!.requests.slice(from).map((r) => r.op),
    ['set-clock', 'exec', 'exec'],
  );
  assert.equal((await notSet).level, 'debug');

  // An agent that knows it: set-clock, with the host's time, goes out before the exec.
  agentPool.closeAll();
  peer!.answerSetClock = 'ok';
  from = peer!.requests.length;
  const t2 = Date.now();
  await execOk('bad', 'new-agent');
  const reqs = peer!.requests.slice(from);
  assert.deepEqual(
    reqs.map((r) => r.op),
    ['set-clock', 'exec'],
  );
  assert.ok(Number(reqs[0]!.unixMs) >= t2 && Number(reqs[0]!.unixMs) <= Date.now());
});
