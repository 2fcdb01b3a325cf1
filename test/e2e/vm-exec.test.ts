import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, chownSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestDaemon } from '../helpers/daemon.js';
import { type DebianVm, debianVmSkip, startDebianVm } from '../helpers/debian-vm.js';
import { bridgeInstance, leftovers } from '../helpers/vm-leftovers.js';

/**
 * `vm exec`, `vm cp` and `banger run` end to end through bin/banger with a real Debian guest on
 * QEMU TCG: the CLI ↔ bangerd stream upgrade, the daemon's one agent connection per VM over
 * virtio-serial, and the C agent in the guest. One VM (no --nat: the agent needs no network)
 * serves every check; `banger run --rm` boots a second one.
 */
const skip = debianVmSkip('tar');

const T = { timeout: 900_000 };
let fx: DebianVm | undefined;
let d: TestDaemon | undefined;
let ns = '';
let work = '';

before(
  async () => {
    if (skip) return;
    work = mkdtempSync(join(tmpdir(), 'banger-exec-e2e-'));
    fx = await startDebianVm({ ns: 'vmexec', config: { vm: { sshTimeoutSeconds: 900, vcpu: 2, memoryMiB: 512 } } });
    d = fx.d;
    ns = fx.ns;
    const v = await d.cli(['vm', 'create', '--image', 'debian-bookworm', '--name', 'ex1'], { timeoutMs: 1_000_000 });
    if (v.code !== 0) {
      const logs = await d.cli(['vm', 'logs', 'ex1']);
      assert.fail(`vm create failed:\n${v.stderr}\nconsole tail:\n${logs.stdout.slice(-3000)}`);
    }
    assert.match(v.stderr, /agent: healthy \(3\)/);
  },
  { timeout: 1_500_000 },
);

after(
  async () => {
    await fx?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  },
  { timeout: 120_000 },
);

interface Out {
  code: number | null;
  stdout: Buffer;
  stderr: Buffer;
}
/** Runs the CLI with binary stdin/stdout/stderr; `onStdout` sees output as it arrives. */
function banger(
  args: string[],
  opts: { input?: Buffer; onStdout?: (all: string, child: ReturnType<typeof spawn>) => void; timeoutMs?: number } = {},
): Promise<Out> {
  const argv = d!.cliArgv(args);
  const child = spawn(argv[0]!, argv.slice(1), { env: d!.env });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  let seen = '';
  child.stdout!.on('data', (b: Buffer) => {
    out.push(b);
    if (opts.onStdout) {
      seen += b.toString('latin1');
      opts.onStdout(seen, child);
    }
  });
  child.stderr!.on('data', (b: Buffer) => err.push(b));
  const t = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 300_000);
  child.stdin!.end(opts.input ?? Buffer.alloc(0));
  return new Promise((resolve) => child.on('close', (code) => (clearTimeout(t), resolve({ code, stdout: Buffer.concat(out), stderr: Buffer.concat(err) }))));
}
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/**
 * Guest wall clock minus the host's, in seconds: the guest reads its clock somewhere inside the
 * exec, so the true difference lies in [lo, hi] (the exec's own duration is the uncertainty).
 */
async function clockSkew(): Promise<{ lo: number; hi: number; source: string }> {
  const t0 = Date.now() / 1000;
  const r = await banger(['vm', 'exec', 'ex1', '--', 'date', '+%s.%N']);
  const t1 = Date.now() / 1000;
  assert.equal(r.code, 0, r.stderr.toString());
  const g = Number(r.stdout.toString().trim());
  const cs = await banger(['vm', 'exec', 'ex1', '--', 'cat', '/sys/devices/system/clocksource/clocksource0/current_clocksource']);
  return { lo: g - t1, hi: g - t0, source: cs.stdout.toString().trim() };
}
/** Fails when the guest's clock is certainly more than 1 s away from the host's. */
function assertClockClose(s: { lo: number; hi: number; source: string }, when: string): void {
  console.log(`# guest clock ${when}: guest - host in [${s.lo.toFixed(3)}, ${s.hi.toFixed(3)}] s, clocksource ${s.source}`);
  assert.ok(s.lo <= 1 && s.hi >= -1, `guest clock ${when}: guest - host in [${s.lo.toFixed(3)}, ${s.hi.toFixed(3)}] s, not within 1 s`);
}

test('the guest clock is within 1 s of the host right after create; vm cp in prints no time-stamp warning', { skip, ...T }, async () => {
  assertClockClose(await clockSkew(), 'right after create');
  const fresh = join(work, 'fresh');
  mkdirSync(fresh);
  writeFileSync(join(fresh, 'now'), 'just written on the host\n');
  const up = await banger(['vm', 'cp', fresh, 'ex1:/root/fresh']);
  assert.equal(up.code, 0, up.stderr.toString());
  assert.doesNotMatch(up.stderr.toString(), /in the future/, 'tar in the guest saw a host mtime in its future');
  assertClockClose(await clockSkew(), 'after vm exec and vm cp');
});

test('vm exec: exit codes 0, 7 and 128+9 pass through; a missing command is 127', { skip, ...T }, async () => {
  assert.equal((await banger(['vm', 'exec', 'ex1', '--', 'true'])).code, 0);
  assert.equal((await banger(['vm', 'exec', 'ex1', '--', 'sh', '-c', 'exit 7'])).code, 7);
  assert.equal((await banger(['vm', 'exec', 'ex1', '--', 'sh', '-c', 'kill -9 $$'])).code, 137);
  const nf = await banger(['vm', 'exec', 'ex1', '--', 'no-such-command']);
  assert.equal(nf.code, 127, nf.stderr.toString());
  assert.match(nf.stderr.toString(), /no-such-command/);
  const env = await banger(['vm', 'exec', '--env', 'A=b c', '--workdir', '/tmp', '--user', 'nobody', 'ex1', '--', 'sh', '-c', 'echo "$A|$(pwd)|$(id -un)"']);
  assert.equal(env.stdout.toString(), 'b c|/tmp|nobody\n', env.stderr.toString());
});

test('vm exec -i: stdin piped; all 256 byte values round-trip on stdout and on stderr', { skip, ...T }, async () => {
  const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
  const o = await banger(['vm', 'exec', '-i', 'ex1', '--', 'cat'], { input: all });
  assert.equal(o.code, 0, o.stderr.toString());
  assert.ok(o.stdout.equals(all), `stdout: ${o.stdout.toString('hex')}`);
  const e = await banger(['vm', 'exec', '-i', 'ex1', '--', 'sh', '-c', 'cat >&2'], { input: all });
  assert.equal(e.code, 0);
  assert.ok(e.stderr.equals(all), `stderr: ${e.stderr.toString('hex')}`);
  assert.equal(e.stdout.length, 0);
});

test('vm exec: 100 MiB of output arrives without loss', { skip, ...T }, async () => {
  const line = 'abcdefghijklmnopqrstuvwxyz0123456789\n';
  const want = Buffer.alloc(100 << 20);
  want.fill(line);
  const t0 = Date.now();
  const o = await banger(['vm', 'exec', 'ex1', '--', 'sh', '-c', `yes ${line.trim()} | head -c ${100 << 20}`], { timeoutMs: 600_000 });
  assert.equal(o.code, 0, o.stderr.toString());
  assert.equal(o.stdout.length, want.length);
  assert.equal(sha(o.stdout), sha(want));
  console.log(`# 100 MiB through vm exec in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
});

test('vm exec: two at once run concurrently; Ctrl-C reaches the guest process; -t gives a pty', { skip, ...T }, async () => {
  // Each waits for the other to have started: run one after the other, the first would time out.
  const both = (me: string, other: string) => [
    'vm',
    'exec',
    'ex1',
    '--',
    'timeout',
    '120',
    'sh',
    '-c',
    `touch /tmp/c-${me}; while [ ! -e /tmp/c-${other} ]; do sleep 0.05; done; echo ${me}`,
  ];
  const [a, b] = await Promise.all([banger(both('a', 'b')), banger(both('b', 'a'))]);
  assert.equal(a.stdout.toString() + b.stdout.toString(), 'a\nb\n', 'the two execs ran one after the other');
  let sent = false;
  const c = await banger(['vm', 'exec', 'ex1', '--', 'sh', '-c', 'trap "echo got-int; exit 42" INT; echo ready; while :; do sleep 0.1; done'], {
    onStdout: (all, child) => {
      if (!sent && all.includes('ready')) {
        sent = true;
        child.kill('SIGINT');
      }
    },
    timeoutMs: 60_000,
  });
  assert.equal(c.code, 42, c.stderr.toString());
  assert.match(c.stdout.toString(), /got-int/);
  const t = await banger(['vm', 'exec', '-t', 'ex1', '--', 'sh', '-c', 'tty; stty size']);
  assert.equal(t.code, 0, t.stderr.toString());
  assert.match(t.stdout.toString(), /^\/dev\/pts\/\d+\r\n24 80\r\n$/);
});

test('vm cp: a tree with a symlink, a setuid file and a 200 MiB file, both ways, equal (out of the guest: owners with -a, setuid dropped)', {
  skip,
  ...T,
}, async () => {
  const src = join(work, 'tree');
  mkdirSync(join(src, 'sub'), { recursive: true });
  const big = Buffer.alloc(200 << 20);
  for (let i = 0; i < big.length; i += 4096) big.writeUInt32LE((i * 2654435761) >>> 0, i);
  writeFileSync(join(src, 'big'), big);
  writeFileSync(join(src, 'sub', 'f'), 'hello');
  writeFileSync(join(src, 'suid'), '#!/bin/sh\n');
  chownSync(join(src, 'suid'), 1234, 2345);
  chmodSync(join(src, 'suid'), 0o4755);
  symlinkSync('sub/f', join(src, 'link'));
  utimesSync(join(src, 'sub', 'f'), 1_000_000_000, 1_000_000_000);
  const t0 = Date.now();
  const up = await banger(['vm', 'cp', src, 'ex1:/root/tree'], { timeoutMs: 600_000 });
  assert.equal(up.code, 0, up.stderr.toString());
  const t1 = Date.now();
  const g = await banger([
    'vm',
    'exec',
    'ex1',
    '--',
    'sh',
    '-c',
    'cd /root/tree && sha256sum big && stat -c "%a %u %g" suid && readlink link && stat -c %Y sub/f',
  ]);
  assert.equal(g.stdout.toString(), `${sha(big)}  big\n4755 1234 2345\nsub/f\n1000000000\n`, g.stderr.toString());
  const back = join(work, 'back');
  // out of the guest: -a (as root) restores owners; setuid bits are dropped all the same
  const down = await banger(['vm', 'cp', '-a', 'ex1:/root/tree', back], { timeoutMs: 600_000 });
  assert.equal(down.code, 0, down.stderr.toString());
  console.log(`# vm cp 200 MiB tree: up ${((t1 - t0) / 1000).toFixed(1)} s, down ${((Date.now() - t1) / 1000).toFixed(1)} s`);
  assert.equal(sha(readFileSync(join(back, 'big'))), sha(big));
  const s = lstatSync(join(back, 'suid'));
  assert.deepEqual([s.mode & 0o7777, s.uid, s.gid], [0o755, 1234, 2345]);
  assert.equal(readlinkSync(join(back, 'link')), 'sub/f');
  assert.equal(lstatSync(join(back, 'sub', 'f')).mtimeMs, 1_000_000_000_000);
  // docker cp rules: into an existing directory, the source lands inside it.
  const into = await banger(['vm', 'cp', join(src, 'sub'), 'ex1:/root/tree/sub']);
  assert.equal(into.code, 0, into.stderr.toString());
  assert.equal((await banger(['vm', 'exec', 'ex1', '--', 'cat', '/root/tree/sub/sub/f'])).stdout.toString(), 'hello');
  const missing = await banger(['vm', 'cp', 'ex1:/nope', join(work, 'x')]);
  assert.notEqual(missing.code, 0);
  assert.match(missing.stderr.toString(), /ex1:\/nope: no such file/);
});

test('the guest clock is still within 1 s of the host after minutes of work', { skip, ...T }, async () => {
  const dmesg = await banger(['vm', 'exec', 'ex1', '--', 'sh', '-c', 'dmesg | grep -i -e clocksource -e tsc || true']);
  console.log(dmesg.stdout.toString().replace(/^/gm, '# '));
  assertClockClose(await clockSkew(), 'after the exec and cp tests');
});

test('banger run --rm: the exit code passes through and nothing is left', { skip, ...T }, async () => {
  const r = await banger(['run', '--rm', '--name', 'once', 'debian-bookworm', '--', 'sh', '-c', 'echo hi; exit 5'], { timeoutMs: 600_000 });
  assert.equal(r.code, 5, r.stderr.toString());
  assert.equal(r.stdout.toString(), 'hi\n');
  assert.deepEqual(leftovers(ns, d!.root, bridgeInstance(ns, 'banger0'), 'once'), []);
  const list = await d!.json(['vm', 'list']);
  assert.deepEqual(
    list.map((v: { name: string }) => v.name),
    ['ex1'],
  );
});

test('vm exec on a stopped or unknown VM fails clearly', { skip, ...T }, async () => {
  const r = await banger(['vm', 'exec', 'nope', '--', 'true']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr.toString(), /nope/);
  assert.equal(spawnSync('true').status, 0);
});
