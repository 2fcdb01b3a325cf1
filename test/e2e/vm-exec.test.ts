import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
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
    assert.match(v.stderr, /agent: healthy \(\d+\)/);
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
async function clockSkew(vm = 'ex1'): Promise<{ lo: number; hi: number; source: string }> {
  const t0 = Date.now() / 1000;
  const r = await banger(['vm', 'exec', vm, '--', 'date', '+%s.%N']);
  const t1 = Date.now() / 1000;
  assert.equal(r.code, 0, r.stderr.toString());
  const g = Number(r.stdout.toString().trim());
  const cs = await banger(['vm', 'exec', vm, '--', 'cat', '/sys/devices/system/clocksource/clocksource0/current_clocksource']);
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

test('vm pause → daemon SIGKILL and restart → vm resume: a guest process still counts, a file written before is there; exec resumes a paused VM with a stage line', {
  skip,
  ...T,
}, async () => {
  const sh = async (cmd: string) => {
    const r = await banger(['vm', 'exec', 'ex1', '--', 'sh', '-c', cmd]);
    assert.equal(r.code, 0, r.stderr.toString());
    return r;
  };
  await sh(
    "echo before-pause > /root/paused-file; sync; setsid -f sh -c 'echo $$ > /run/counter.pid; i=0; while :; do i=$((i+1)); echo $i > /run/counter; sleep 0.2; done' </dev/null >/dev/null 2>&1",
  );
  const counter = async () => Number((await sh('cat /run/counter')).stdout.toString().trim());
  const loopPid = (await sh('cat /run/counter.pid')).stdout.toString().trim();
  const c1 = await counter();
  const qemuPid = (await d!.json(['vm', 'show', 'ex1'])).pid as number;
  assert.ok(qemuPid > 0);

  const p = await banger(['vm', 'pause', 'ex1']);
  assert.equal(p.code, 0, p.stderr.toString());
  assert.match(p.stdout.toString(), /ex1: paused \(state [\d.]+ MiB on disk\)/);
  const shown = await d!.json(['vm', 'show', 'ex1']);
  assert.equal(shown.state, 'paused');
  assert.equal(shown.running, false);
  assert.ok(shown.paused.bytes > 0, 'vm show says how big the state is');
  // Gone, or a zombie waiting for its reaper (the daemonized QEMU is not the daemon's child): its memory is freed.
  const st = existsSync(`/proc/${qemuPid}/stat`) ? readFileSync(`/proc/${qemuPid}/stat`, 'utf8').replace(/^.*\) /, '')[0] : 'gone';
  assert.ok(st === 'gone' || st === 'Z', `the VMM exited (state ${st}): its memory is freed`);

  await d!.kill(); // as a crash would
  await d!.start();
  assert.equal((await d!.json(['vm', 'show', 'ex1'])).state, 'paused', 'reconcile left the paused VM alone');

  const r = await banger(['vm', 'resume', 'ex1']);
  assert.equal(r.code, 0, r.stderr.toString());
  assert.match(r.stdout.toString(), /ex1: running/);
  assert.equal((await sh('cat /root/paused-file')).stdout.toString(), 'before-pause\n');
  await sh(`kill -0 ${loopPid}`);
  const c2 = await counter();
  assert.ok(c2 >= c1, `the counter went on from ${c1} (now ${c2}), it did not start over`);
  assertClockClose(await clockSkew(), 'after a pause and a resume');

  // A second pause: exec resumes the VM itself and says so.
  assert.equal((await banger(['vm', 'pause', 'ex1'])).code, 0);
  const e = await banger(['vm', 'exec', 'ex1', '--', 'cat', '/root/paused-file']);
  assert.equal(e.code, 0, e.stderr.toString());
  assert.match(e.stderr.toString(), /resume: vm ex1 was paused; resumed in [\d.]+ s/);
  assert.equal(e.stdout.toString(), 'before-pause\n');
  assert.ok((await counter()) > c2, 'the guest process runs on after the second resume');
  assert.equal((await d!.json(['vm', 'show', 'ex1'])).state, 'running');
});

test('image warm, then two warm creates at once: each restored (stage restore) with its own IP, MAC, hostname, machine-id and host key (pinned SSH works), clock within 1 s', {
  skip,
  ...T,
}, async () => {
  const w = await banger(['image', 'warm', 'debian-bookworm'], { timeoutMs: 900_000 });
  assert.equal(w.code, 0, w.stderr.toString());
  assert.match(w.stdout.toString(), /image 'debian-bookworm' warm for 2 vCPU, 512 MiB/);
  const shown = await d!.json(['image', 'show', 'debian-bookworm']);
  assert.equal(shown.warm.length, 1);
  assert.ok(shown.warm[0].bytes.allocated > 0);
  console.log(`# warm snapshot: ${JSON.stringify(shown.warm[0].bytes)}`);

  const names = ['warm1', 'warm2'];
  const creates = await Promise.all(names.map((n) => banger(['vm', 'create', '--image', 'debian-bookworm', '--name', n], { timeoutMs: 600_000 })));
  const seen = new Map<string, string>();
  for (const [i, n] of names.entries()) {
    const c = creates[i]!;
    assert.equal(c.code, 0, c.stderr.toString());
    assert.match(c.stderr.toString(), /restore/, `${n} was restored, not booted`);
    assert.match(c.stderr.toString(), /identity/);
    const v = await d!.json(['vm', 'show', n]);
    const r = await banger(['vm', 'exec', n, '--', 'sh', '-c', 'hostname; cat /etc/machine-id; cat /sys/class/net/eth0/address; ip -4 -o addr show eth0']);
    assert.equal(r.code, 0, r.stderr.toString());
    const [host, machineId, mac, addr] = r.stdout.toString().trim().split('\n');
    assert.equal(host, n);
    assert.equal(mac, String(v.mac).toLowerCase());
    assert.match(addr!, new RegExp(` inet ${v.ip.replace(/\./g, '\\.')}/`));
    for (const [what, val] of [
      ['machine-id', machineId!],
      ['mac', mac!],
      ['ip', v.ip as string],
    ]) {
      assert.ok(!seen.has(`${what}=${val}`), `${what} ${val} shared by ${n} and ${seen.get(`${what}=${val}`)}`);
      seen.set(`${what}=${val}`, n);
    }
    // Pinned SSH (StrictHostKeyChecking with banger's known_hosts): the guest serves this VM's own key.
    const sshr = await d!.cli(['vm', 'ssh', n, '--', 'cat /etc/ssh/ssh_host_ed25519_key.pub'], { timeoutMs: 120_000 });
    assert.equal(sshr.code, 0, sshr.stderr);
    assert.ok(!seen.has(`key=${sshr.stdout.trim()}`), 'host keys differ');
    seen.set(`key=${sshr.stdout.trim()}`, n);
    // The host's neighbour table has the VM's own MAC for its IP (gratuitous ARP / the SSH traffic).
    const neigh = spawnSync('ip', ['-n', ns, 'neigh', 'show', v.ip], { encoding: 'utf8' }).stdout;
    assert.match(neigh, new RegExp(`lladdr ${mac}`), neigh);
    assertClockClose(await clockSkew(n), `of ${n} right after a warm create`);
  }
  const rm = await banger(['vm', 'rm', '-f', ...names]);
  assert.equal(rm.code, 0, rm.stderr.toString());
});

test('vm snapshot + vm fork: the children of a VM that counts continue from its count, each its own VM; refusals (other shape, damaged state) leave nothing', {
  skip,
  ...T,
}, async () => {
  const sh = async (vm: string, cmd: string) => {
    const r = await banger(['vm', 'exec', vm, '--', 'sh', '-c', cmd]);
    assert.equal(r.code, 0, `${vm}: ${r.stderr.toString()}`);
    return r.stdout.toString().trim();
  };
  await sh('ex1', "setsid -f sh -c 'i=0; while :; do i=$((i+1)); echo $i > /run/fcount; sleep 0.2; done' </dev/null >/dev/null 2>&1; sleep 1");
  const snap = await banger(['vm', 'snapshot', 'ex1', 't1']);
  assert.equal(snap.code, 0, snap.stderr.toString());
  const atSnap = Number(await sh('ex1', 'cat /run/fcount'));
  assert.match((await banger(['vm', 'snapshot', 'ls', 'ex1'])).stdout.toString(), /ex1@t1/);

  const f = await banger(['vm', 'fork', 'ex1', 'kid', '--count', '2'], { timeoutMs: 600_000 });
  assert.equal(f.code, 0, f.stderr.toString());
  for (const kid of ['kid-1', 'kid-2']) {
    assert.equal(await sh(kid, 'hostname'), kid);
    const c = Number(await sh(kid, 'cat /run/fcount'));
    assert.ok(c >= atSnap - 10, `${kid} continues from the parent's count (${c}, parent at the snapshot ${atSnap})`);
    const later = Number(await sh(kid, 'sleep 1; cat /run/fcount'));
    assert.ok(later > c, `${kid}'s counter runs on (${c} → ${later})`);
  }
  assert.ok(Number(await sh('ex1', 'cat /run/fcount')) > atSnap, 'the parent runs on');

  // Refusals, each leaving nothing: another shape; a damaged state file.
  const shape = await banger(['vm', 'create', '--from', 'ex1@t1', '--name', 'k3', '--memory', '768']);
  assert.notEqual(shape.code, 0);
  assert.match(shape.stderr.toString(), /768/);
  const state = join(d!.root, 'vms', 'ex1', 'snapshots', 't1', 'state');
  const buf = readFileSync(state);
  buf[buf.length >> 1]! ^= 0xff;
  writeFileSync(state, buf);
  const dmg = await banger(['vm', 'create', '--from', 'ex1@t1', '--name', 'k4']);
  assert.notEqual(dmg.code, 0);
  assert.match(dmg.stderr.toString(), /damaged/);
  for (const n of ['k3', 'k4']) assert.deepEqual(leftovers(ns, d!.root, bridgeInstance(ns, 'banger0'), n), [], `${n} left nothing`);
  assert.equal((await banger(['vm', 'rm', '-f', 'kid-1', 'kid-2'])).code, 0);
  assert.equal((await banger(['vm', 'snapshot', 'rm', 'ex1', 't1'])).code, 0);
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

test('--ttl 20s --on-expire rm on a real guest: removed with everything it made when its lifetime ends, also across a daemon SIGKILL and restart', {
  skip,
  ...T,
}, async () => {
  // The image is warm by now (the warm test above), so this create is a restore, not a boot.
  const v = await banger(['vm', 'create', '--image', 'debian-bookworm', '--name', 'ttl1', '--ttl', '20s', '--on-expire', 'rm'], { timeoutMs: 600_000 });
  assert.equal(v.code, 0, v.stderr.toString());
  const shown = await d!.json(['vm', 'show', 'ttl1']);
  assert.equal(shown.onExpire, 'rm');
  assert.ok(shown.expiresAt, 'the deadline is stored');
  assert.equal((await banger(['vm', 'exec', 'ttl1', '--', 'true'])).code, 0, 'it runs until then');
  await d!.kill(); // as a crash would: the deadline must outlive the daemon
  await d!.start();
  const deadline = Date.parse(shown.expiresAt);
  // Wait on the event (the VM leaving the list), with a generous bound past the deadline.
  for (;;) {
    const names = (await d!.json(['vm', 'list'])).map((x: { name: string }) => x.name);
    if (!names.includes('ttl1')) break;
    assert.ok(Date.now() < deadline + 120_000, `ttl1 still listed 120 s after its deadline ${shown.expiresAt}`);
    await new Promise((r) => setTimeout(r, 500));
  }
  assert.ok(Date.now() >= deadline - 1000, 'not removed before its deadline');
  assert.deepEqual(leftovers(ns, d!.root, bridgeInstance(ns, 'banger0'), 'ttl1'), []);
});

test('vm exec on a stopped or unknown VM fails clearly', { skip, ...T }, async () => {
  const r = await banger(['vm', 'exec', 'nope', '--', 'true']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr.toString(), /nope/);
  assert.equal(spawnSync('true').status, 0);
});
