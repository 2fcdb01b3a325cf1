import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nullLogger } from '../../src/core/log.js';
import { defaultSources } from '../../src/guest/inject.js';
import { RpcServer } from '../../src/rpc/server.js';
import { agentPool, connectUnix } from '../../src/vms/agent.js';
import { vmMethods } from '../../src/daemon/handlers/vms.js';
import type { VmService } from '../../src/vms/service.js';

/**
 * `banger vm exec` and `banger vm cp` through the built CLI, the RPC stream upgrade and the
 * daemon's bridge (the daemon's vm.* handlers on a real RpcServer), down to the real C agent serving on a
 * Unix socket on this host: everything but the VM. VM 'box' runs; VM 'off' is stopped.
 * (test/e2e/vm-exec.test.ts runs the same commands against a real guest.)
 */
const AGENT = defaultSources().agentPath;
const BANGER = new URL('../../../bin/banger', import.meta.url).pathname;
const skip = existsSync(AGENT) ? undefined : 'agent not built (npm run build)';
let dir = '';
let agent: ChildProcess | undefined;
let server: RpcServer | undefined;
let env: NodeJS.ProcessEnv = {};

before(async () => {
  if (skip) return;
  dir = mkdtempSync(join(tmpdir(), 'banger-agent-cli-'));
  const agentSock = join(dir, 'agent.sock');
  agent = spawn(AGENT, ['--unix', agentSock], { stdio: 'ignore' });
  for (let i = 0; i < 100 && !existsSync(agentSock); i++) await new Promise((r) => setTimeout(r, 20));
  const svc = {
    get: (name: string) => ({ name, id: `id-${name}`, vmm: 'qemu' }),
    resumeIfPaused: async () => undefined, // never paused here (vms/pause.ts)
    observe: async (vm: { name: string }) => ({ running: vm.name !== 'off' }),
    driver: () => ({ openAgentStream: () => connectUnix(agentSock) }),
    handle: (vm: { id: string; name: string }) => ({ id: vm.id, name: vm.name }),
  } as unknown as VmService;
  server = new RpcServer({ socketPath: join(dir, 'd.sock'), log: nullLogger, methods: vmMethods(svc) });
  await server.listen();
  env = { ...process.env, BANGER_SOCKET: join(dir, 'd.sock'), BANGER_ROOT: join(dir, 'root') };
});
after(async () => {
  agentPool.closeAll();
  await server?.close();
  agent?.kill('SIGKILL');
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function banger(
  args: string[],
  opts: { input?: Buffer; onStdout?: (all: string, child: ChildProcess) => void } = {},
): Promise<{ code: number | null; stdout: Buffer; stderr: string }> {
  const child = spawn(process.execPath, [BANGER, ...args], { env });
  const out: Buffer[] = [];
  let err = '';
  child.stdout!.on('data', (b: Buffer) => {
    out.push(b);
    opts.onStdout?.(Buffer.concat(out).toString(), child);
  });
  child.stderr!.on('data', (b) => (err += b));
  child.stdin!.end(opts.input ?? Buffer.alloc(0));
  const t = setTimeout(() => child.kill('SIGKILL'), 30_000);
  return new Promise((resolve) => child.on('close', (code) => (clearTimeout(t), resolve({ code, stdout: Buffer.concat(out), stderr: err }))));
}

test('vm exec: exit codes, 127, binary stdin/stdout/stderr, env/workdir, Ctrl-C, a stopped VM', { skip }, async () => {
  assert.equal((await banger(['vm', 'exec', 'box', '--', 'true'])).code, 0);
  assert.equal((await banger(['vm', 'exec', 'box', '--', 'sh', '-c', 'exit 7'])).code, 7);
  assert.equal((await banger(['vm', 'exec', 'box', '--', 'sh', '-c', 'kill -9 $$'])).code, 137);
  const nf = await banger(['vm', 'exec', 'box', '--', 'no-such-cmd-x']);
  assert.equal(nf.code, 127);
  assert.match(nf.stderr, /no-such-cmd-x/);
  const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
  const io = await banger(['vm', 'exec', '-i', 'box', '--', 'sh', '-c', 'tee /dev/stderr'], { input: all });
  assert.ok(io.stdout.equals(all));
  const noI = await banger(['vm', 'exec', 'box', '--', 'wc', '-c'], { input: all });
  assert.equal(noI.stdout.toString().trim(), '0', 'without -i the command reads EOF');
  const e = await banger(['vm', 'exec', '-e', 'X=1 2', '-w', '/tmp', 'box', '--', 'sh', '-c', 'echo "$X $(pwd)"']);
  assert.equal(e.stdout.toString(), '1 2 /tmp\n');
  let sent = false;
  const c = await banger(['vm', 'exec', 'box', '--', 'sh', '-c', 'trap "echo got-int; exit 42" INT; echo ready; while :; do sleep 0.05; done'], {
    onStdout: (s, child) => !sent && s.includes('ready') && (sent = true) && child.kill('SIGINT'),
  });
  assert.equal(c.code, 42);
  assert.match(c.stdout.toString(), /got-int/);
  const off = await banger(['vm', 'exec', 'off', '--', 'true']);
  assert.equal(off.code, 1);
  assert.match(off.stderr, /vm 'off' is not running/);
  const bad = await banger(['vm', 'exec', '-e', 'NOEQ', 'box', '--', 'true']);
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /env\.0/);
});

test('vm cp: docker cp path rules both ways, symlinks kept, clear errors', { skip }, async () => {
  const src = join(dir, 'src');
  mkdirSync(join(src, 'sub'), { recursive: true });
  writeFileSync(join(src, 'sub', 'f'), 'hello');
  symlinkSync('sub/f', join(src, 'link'));
  const g = join(dir, 'guest');
  mkdirSync(g);
  // to a path that does not exist: created with the source's contents
  assert.equal((await banger(['vm', 'cp', src, `box:${g}/new`])).code, 0);
  assert.equal(readFileSync(join(g, 'new', 'sub', 'f'), 'utf8'), 'hello');
  assert.equal(readlinkSync(join(g, 'new', 'link')), 'sub/f');
  // to an existing directory: lands inside it
  assert.equal((await banger(['vm', 'cp', join(src, 'sub'), `box:${g}/new`])).code, 0);
  assert.equal(readFileSync(join(g, 'new', 'sub', 'f'), 'utf8'), 'hello');
  assert.ok(lstatSync(join(g, 'new', 'sub')).isDirectory());
  // a file to a new name, and back out under another name
  assert.equal((await banger(['vm', 'cp', join(src, 'sub', 'f'), `box:${g}/renamed`])).code, 0);
  assert.equal(readFileSync(join(g, 'renamed'), 'utf8'), 'hello');
  const h = join(dir, 'host');
  mkdirSync(h);
  assert.equal((await banger(['vm', 'cp', `box:${g}/new`, join(h, 'copy')])).code, 0);
  assert.equal(readlinkSync(join(h, 'copy', 'link')), 'sub/f');
  assert.equal((await banger(['vm', 'cp', `box:${g}/new`, h])).code, 0);
  assert.equal(readFileSync(join(h, 'new', 'sub', 'f'), 'utf8'), 'hello');
  // errors name what is wrong
  const miss = await banger(['vm', 'cp', `box:${g}/nope`, h]);
  assert.notEqual(miss.code, 0);
  assert.match(miss.stderr, /box:.*\/nope: no such file or directory/);
  const onto = await banger(['vm', 'cp', src, `box:${g}/renamed`]);
  assert.notEqual(onto.code, 0);
  assert.match(onto.stderr, /cannot copy directory/);
  const both = await banger(['vm', 'cp', src, h]);
  assert.notEqual(both.code, 0);
  assert.match(both.stderr, /exactly one of SRC and DST/);
});
