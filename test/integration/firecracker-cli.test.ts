import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { isRoot, missingTools, type TestDaemon } from '../helpers/daemon.js';
import { startFirecrackerCli, type FirecrackerCliFixture } from '../helpers/firecracker-cli-fixture.js';
import { bridgeInstance, leftovers, processesWith } from '../helpers/vm-leftovers.js';

/**
 * `--vmm firecracker` through the built CLI against an isolated daemon (own network namespace,
 * so its bridge, taps and NAT rules are its own) whose `binaries.firecracker` is the test
 * STAND-IN for Firecracker (no binary or usable KVM here). The stand-in serves the v1.16.1 API
 * contract (bodies validated against the spec, the tap opened at PUT time in the daemon's
 * namespace) and answers vsock port 1024 with the real guest agent, so `vm ports` goes through
 * the hybrid vsock handshake to the agent's own protocol. Every failure path unwinds.
 */
const skip = !isRoot() ? 'needs root (namespaces, taps, nft)' : missingTools('ip', 'nft', 'mkfs.ext4', 'debugfs', 'ssh-keygen');
let fx: FirecrackerCliFixture | undefined;
let ns = '';
let d: TestDaemon;
let work = '';
let standin: FirecrackerCliFixture['standin'];
let instance = '';

before(
  async () => {
    if (skip) return;
    fx = await startFirecrackerCli({ tag: 'fccli', bridge: 'bgfc0', subnet: '10.87.0.0/24' });
    ({ d, ns, work, standin } = fx);
  },
  { timeout: 600_000 },
);

after(
  async () => {
    await fx?.stop();
  },
  { timeout: 120_000 },
);

function nothingLeft(name: string): void {
  instance ||= bridgeInstance(ns, 'bgfc0'); // the bridge exists once the first VM's network step ran
  const found = leftovers(ns, d.root, instance, name);
  for (const pid of processesWith(`bg-${instance}-`)) {
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    if (argv.includes(`/vms/${name}/`)) found.push(`firecracker process ${pid}`);
  }
  assert.deepEqual(found, [], `left behind by ${name}`);
}

test('vm create --vmm firecracker --no-wait, list, show, ports over hybrid vsock, stop, start, kill, SIGKILL daemon + adopt, rm', {
  skip,
  timeout: 300_000,
}, async () => {
  standin.setKnobs({});
  const created = await d.cli(['--json', 'vm', 'create', '--image', 'fcimg', '--name', 'fc1', '--vmm', 'firecracker', '--no-wait'], { timeoutMs: 120_000 });
  assert.equal(created.code, 0, created.stderr);
  const show = await d.json(['vm', 'show', 'fc1']);
  assert.equal(show.vmm, 'firecracker');
  assert.match(show.vmmReason, /^requested firecracker; KVM not usable/);
  assert.equal(show.running, true);
  assert.equal(show.spec.rootDisk.format, 'raw');
  assert.ok(show.rootDiskMethod === 'reflink' || show.rootDiskMethod === 'sparse', show.rootDiskMethod);
  const human = await d.cli(['vm', 'show', 'fc1']);
  assert.match(human.stdout, /root disk: .*root\.ext4 \(raw, (reflink|sparse) copy\)/);
  const dir = join(d.root, 'vms', 'fc1');
  assert.ok(existsSync(join(dir, 'firecracker.sock')) && existsSync(join(dir, 'vsock.sock')));
  assert.match(readFileSync(join(dir, 'console.log'), 'utf8'), /stand-in: instance bg-[0-9a-f]{12}-[0-9a-f]{20} running/);
  const log = readFileSync(join(dir, 'firecracker.log'), 'utf8');
  assert.match(log, /InstanceStart/);
  assert.doesNotMatch(log, /fault/);

  const list = await d.json(['vm', 'list']);
  assert.deepEqual(
    list.map((v: any) => [v.name, v.vmm, v.running]),
    [['fc1', 'firecracker', true]],
  );

  // The real agent, reached through CONNECT 1024 on the vsock UDS, lists the listening ports of
  // the namespace the stand-in runs in (the daemon's): the agent's own protocol, not a fake.
  // A listener the test opens in that namespace must be in the list the agent reports.
  const code = "const s = require('node:net').createServer().listen(0, '127.0.0.1', () => console.log(s.address().port));";
  const listener = spawn('ip', ['netns', 'exec', d.netns!, process.execPath, '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const port = await new Promise<number>((resolve, reject) => {
      listener.stdout.once('data', (b: Buffer) => resolve(Number(b.toString().trim())));
      listener.once('exit', (c) => reject(new Error(`listener exited ${c}`)));
    });
    const ports = await d.json(['vm', 'ports', 'fc1']);
    assert.equal(ports.agent, true);
    assert.ok(
      ports.ports.some((p: { proto: string; port: number; address: string }) => p.proto === 'tcp' && p.port === port && p.address === '127.0.0.1'),
      `127.0.0.1:${port} in ${JSON.stringify(ports.ports)}`,
    );
  } finally {
    listener.kill('SIGKILL');
  }

  // The stand-in exits on SendCtrlAltDel, as a guest rebooting with reboot=k: no SIGKILL needed.
  const stop = await d.cli(['--json', 'vm', 'stop', 'fc1'], { timeoutMs: 60_000 });
  assert.equal(stop.code, 0, stop.stderr);
  assert.deepEqual(
    JSON.parse(stop.stdout).map((v: { name: string; forced: boolean }) => [v.name, v.forced]),
    [['fc1', false]],
    'stopped without a kill',
  );
  assert.equal((await d.json(['vm', 'show', 'fc1'])).running, false);
  assert.match(readFileSync(join(dir, 'firecracker.log'), 'utf8'), /SendCtrlAltDel/, 'stopped by Ctrl-Alt-Del, not a signal');
  assert.ok(!existsSync(join(dir, 'firecracker.sock')), 'API socket removed after stop');

  const start = await d.cli(['vm', 'start', 'fc1', '--no-wait'], { timeoutMs: 60_000 });
  assert.equal(start.code, 0, start.stderr);
  const pid1 = (await d.json(['vm', 'show', 'fc1'])).pid;
  assert.ok(pid1 > 0);

  // Daemon SIGKILL + restart: the Firecracker process outlives it and is adopted (pid file + GET /).
  await d.kill();
  await d.start();
  const adopted = await d.json(['vm', 'show', 'fc1']);
  assert.deepEqual([adopted.running, adopted.pid], [true, pid1]);
  assert.equal((await d.json(['vm', 'ports', 'fc1'])).agent, true);

  const kill = await d.cli(['vm', 'kill', 'fc1'], { timeoutMs: 60_000 });
  assert.equal(kill.code, 0, kill.stderr);
  assert.equal((await d.json(['vm', 'show', 'fc1'])).running, false);

  const rm = await d.cli(['vm', 'rm', 'fc1'], { timeoutMs: 60_000 });
  assert.equal(rm.code, 0, rm.stderr);
  nothingLeft('fc1');
});

/** The built CLI in the daemon's namespace with binary stdin/stdout (d.cli is text only). */
function bangerBin(args: string[], input: Buffer = Buffer.alloc(0)): Promise<{ code: number; stdout: Buffer; stderr: string }> {
  const argv = d.cliArgv(args);
  const child = spawn(argv[0]!, argv.slice(1), { env: d.env });
  const out: Buffer[] = [];
  let stderr = '';
  child.stdout.on('data', (b: Buffer) => out.push(b));
  child.stderr.on('data', (b) => (stderr += b));
  child.stdin.end(input);
  const t = setTimeout(() => child.kill('SIGKILL'), 60_000);
  return new Promise((resolve) => child.on('close', (code) => (clearTimeout(t), resolve({ code: code ?? -1, stdout: Buffer.concat(out), stderr }))));
}

// Issue 13 on Firecracker: `vm exec` and `vm cp` go through the driver's hybrid vsock channel
// (CONNECT 1024 on the VM's vsock UDS) to the real agent the stand-in runs with `--stdio`.
// That agent runs on this host (in the daemon's namespace), so "guest" paths are in a temp
// dir this test owns.
test('vm exec and vm cp over the hybrid vsock channel on the stand-in', { skip, timeout: 300_000 }, async () => {
  standin.setKnobs({});
  const created = await d.cli(['vm', 'create', '--image', 'fcimg', '--name', 'fcx', '--vmm', 'firecracker', '--no-wait'], { timeoutMs: 120_000 });
  assert.equal(created.code, 0, created.stderr);
  try {
    assert.equal((await bangerBin(['vm', 'exec', 'fcx', '--', 'true'])).code, 0);
    const seven = await bangerBin(['vm', 'exec', 'fcx', '--', 'sh', '-c', 'echo out; echo err >&2; exit 7']);
    assert.deepEqual([seven.code, seven.stdout.toString(), seven.stderr], [7, 'out\n', 'err\n']);
    // stdin piped through (-i), every byte value both ways
    const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    const piped = await bangerBin(['vm', 'exec', '-i', 'fcx', '--', 'cat'], Buffer.concat([all, all]));
    assert.equal(piped.code, 0, piped.stderr);
    assert.ok(piped.stdout.equals(Buffer.concat([all, all])), `stdin round trip: ${piped.stdout.length} bytes back`);
    // binary stdout produced on the guest side, larger than any pipe buffer
    const g = join(work, 'guest');
    mkdirSync(g, { recursive: true });
    const blob = randomBytes(3 << 20);
    writeFileSync(join(g, 'blob'), blob);
    const big = await bangerBin(['vm', 'exec', 'fcx', '--', 'cat', join(g, 'blob')]);
    assert.equal(big.code, 0, big.stderr);
    assert.ok(big.stdout.equals(blob), `binary stdout: ${big.stdout.length} of ${blob.length} bytes, equal=false`);

    // vm cp a small tree in (to a path that does not exist) and back out
    const src = join(work, 'tree');
    mkdirSync(join(src, 'sub'), { recursive: true });
    writeFileSync(join(src, 'sub', 'f'), 'hello fc');
    writeFileSync(join(src, 'bin'), all, { mode: 0o750 });
    symlinkSync('sub/f', join(src, 'link'));
    const cpIn = await bangerBin(['vm', 'cp', src, `fcx:${g}/in`]);
    assert.equal(cpIn.code, 0, cpIn.stderr);
    assert.equal(readFileSync(join(g, 'in', 'sub', 'f'), 'utf8'), 'hello fc');
    assert.ok(readFileSync(join(g, 'in', 'bin')).equals(all));
    assert.equal(statSync(join(g, 'in', 'bin')).mode & 0o777, 0o750);
    assert.equal(readlinkSync(join(g, 'in', 'link')), 'sub/f');
    const out = join(work, 'out');
    const cpOut = await bangerBin(['vm', 'cp', `fcx:${g}/in`, out]);
    assert.equal(cpOut.code, 0, cpOut.stderr);
    assert.equal(readFileSync(join(out, 'sub', 'f'), 'utf8'), 'hello fc');
    assert.ok(readFileSync(join(out, 'bin')).equals(all));
    assert.ok(lstatSync(join(out, 'link')).isSymbolicLink());
    const miss = await bangerBin(['vm', 'cp', `fcx:${g}/nope`, out]);
    assert.notEqual(miss.code, 0);
    assert.match(miss.stderr, /fcx:.*\/nope: no such file or directory/);
  } finally {
    const rm = await d.cli(['vm', 'rm', '-f', 'fcx'], { timeoutMs: 60_000 });
    assert.equal(rm.code, 0, rm.stderr);
  }
  nothingLeft('fcx');
});

for (const [name, knobs, step, pattern] of [
  [
    'a step answering 400',
    { FC_STANDIN_FAIL_PATH: '/network-interfaces/eth0' },
    'network-interface',
    /firecracker step network-interface failed: stand-in: \/network-interfaces\/eth0 refused/,
  ],
  ['the process dying early', { FC_STANDIN_DIE_EARLY: '153' }, 'vmm-start', /exited with code 153: bad command-line arguments/],
  ['a socket that never appears', { FC_STANDIN_NO_SOCKET: '1' }, 'vmm-start', /API socket .* did not answer within/],
] as const) {
  test(`vm create --vmm firecracker fails and unwinds: ${name}`, { skip, timeout: 120_000 }, async () => {
    standin.setKnobs(knobs);
    try {
      const r = await d.cli(['--json', 'vm', 'create', '--image', 'fcimg', '--name', 'fcbad', '--vmm', 'firecracker', '--no-wait'], { timeoutMs: 90_000 });
      assert.equal(r.code, 1, r.stdout);
      assert.match(r.stderr, pattern);
      void step;
      nothingLeft('fcbad');
    } finally {
      standin.setKnobs({});
    }
  });
}

test('auto does not pick firecracker without usable KVM, and says why', { skip, timeout: 120_000 }, async () => {
  const r = await d.cli(['--json', 'vm', 'create', '--image', 'fcimg', '--name', 'fcauto', '--no-start'], { timeoutMs: 60_000 });
  if (r.code === 0) {
    const show = await d.json(['vm', 'show', 'fcauto']);
    assert.match(show.vmmReason, /^auto: firecracker: KVM not usable: .* → qemu/);
    assert.equal((await d.cli(['vm', 'rm', 'fcauto'])).code, 0);
  } else assert.match(r.stderr, /firecracker: KVM not usable/, r.stderr);
  nothingLeft('fcauto');
});
