import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openDatabase } from '../../src/core/db.js';
import { TestDaemon } from '../helpers/daemon.js';
import { type DebianVm, debianVmSkip, startDebianVm } from '../helpers/debian-vm.js';
import { DEBIAN_KMOD_INCLUDE } from '../helpers/debootstrap.js';
import { createNetns, nsLinks, nsRun, vethPair } from '../helpers/netns.js';
import { lineEcho } from '../helpers/line-session.js';

/**
 * The VM lifecycle end to end, through bin/banger, on QEMU microvm (TCG):
 * kernel pulled from a local signed Debian mirror, a debootstrap Debian image (systemd +
 * openssh-server) pulled from a local registry; then the daemon runs inside a network
 * namespace "host" wired by veth to a namespace "inet" that plays the internet.
 * Few boots (each TCG systemd boot is ~10-60 s depending on load): one VM serves most checks.
 */
const skip = debianVmSkip();

const T = { timeout: 600_000 };
let fx: DebianVm | undefined;
let d: TestDaemon | undefined;
let hostNs = '';
let inetNs = '';
let server: ChildProcess | undefined;

const config = { vm: { sshTimeoutSeconds: 300, stopTimeoutSeconds: 60, vcpu: 2, memoryMiB: 512 } };

before(
  async () => {
    if (skip) return;
    // This file checks `modprobe` on the kernel's modules disk, so its image ships kmod (the
    // other e2e files use the fixture without it, like users' images).
    fx = await startDebianVm({ ns: 'vmhost', config, include: DEBIAN_KMOD_INCLUDE, repo: 'banger-test/debian-kmod' });
    d = fx.d;
    hostNs = fx.ns;
    inetNs = createNetns('vminet');

    vethPair(hostNs, 'uplink0', '10.200.0.1/24', inetNs, 'eth0', '10.200.0.2/24');
    // "The internet": answers every request with the client address it sees.
    server = spawn(
      'ip',
      ['netns', 'exec', inetNs, process.execPath, '-e', "require('http').createServer((q,s)=>s.end('seen='+q.socket.remoteAddress)).listen(8080,'10.200.0.2')"],
      { stdio: 'ignore' },
    );
  },
  { timeout: 900_000 },
);

after(
  async () => {
    server?.kill('SIGKILL');
    await d?.kill(); // a test restarts the daemon on the same root: this is the one running now
    await fx?.stop({ kill: true }); // kills QEMU processes inside the namespaces, then deletes them
  },
  { timeout: 120_000 },
);

/** Alive and not a zombie (an orphaned VMM may wait for a subreaper to collect it). */
function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^[ZX]/.test(stat.slice(stat.lastIndexOf(')') + 2));
  } catch {
    return false;
  }
}

async function ssh(name: string, cmd: string) {
  return d!.cli(['vm', 'ssh', name, '--', cmd], { timeoutMs: 120_000 });
}

let ip1 = '';

test('vm create --nat boots Debian under QEMU TCG; ssh runs commands as root on systemd', { skip, ...T }, async () => {
  const r = await d!.cli(['--json', 'vm', 'create', '--image', 'debian-bookworm', '--name', 'box1', '--nat'], { timeoutMs: 400_000 });
  assert.equal(r.code, 0, r.stderr);
  const v = JSON.parse(r.stdout);
  assert.equal(v.name, 'box1');
  assert.equal(v.running, true);
  assert.equal(v.vmm, 'qemu');
  ip1 = v.ip;
  assert.equal(ip1, '172.16.0.2');
  for (const stage of ['disk', 'network', 'vmm', 'boot', 'ssh']) assert.match(r.stderr, new RegExp(`\\] ${stage}: `), `progress shows stage ${stage}`);
  const show = await d!.json(['vm', 'show', 'box1']);
  assert.match(show.vmmReason, /firecracker: (binary not found|KVM not usable)/);

  const s = await ssh('box1', 'id; uname -r; systemctl is-system-running --wait');
  assert.equal(s.code, 0, `${s.stdout}\n${s.stderr}`);
  assert.match(s.stdout, /uid=0\(root\)/);
  assert.match(s.stdout, /cloud-amd64/);
  assert.match(s.stdout, /running/);
  // The guest agent (injected into every pulled image) answers over virtio-serial.
  assert.match(r.stderr, /agent: healthy/);
  const ports = await d!.json(['vm', 'ports', 'box1']);
  assert.ok(
    ports.ports.some((p: { proto: string; port: number }) => p.proto === 'tcp' && p.port === 22),
    JSON.stringify(ports),
  );
  const logs = await d!.cli(['vm', 'logs', 'box1']);
  assert.match(logs.stdout, /Linux version/, 'vm logs prints the serial console');
  // ssh-config: plain OpenSSH with banger's fragment reaches NAME.vm with the pinned key.
  const sc = await d!.json(['ssh-config']);
  assert.equal(nsRun(hostNs, ['ssh', '-F', sc.path, '-o', 'BatchMode=yes', 'box1.vm', 'hostname']).trim(), 'box1');
  const ex = await ssh('box1', 'exit 3');
  assert.equal(ex.code, 3, 'vm ssh exits with the remote exit code');
  // The kernel's modules disk is mounted read-only on /lib/modules/RELEASE: modprobe works (this image has kmod).
  const mod = await ssh('box1', 'grep "/lib/modules/$(uname -r) " /proc/mounts; modprobe overlay && grep -w overlay /proc/filesystems');
  assert.equal(mod.code, 0, `${mod.stdout}\n${mod.stderr}`);
  assert.match(mod.stdout, /^\/dev\/vdc (\/usr)?\/lib\/modules\/\S+ ext4 ro[, ]/m); // merged /usr: the mount point is /usr/lib/modules
  assert.match(mod.stdout, /\boverlay$/m);
});

test('NAT: the guest reaches the "internet" namespace, which sees the host address (masquerade)', { skip, ...T }, async () => {
  const s = await ssh('box1', "exec 3<>/dev/tcp/10.200.0.2/8080; printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3");
  assert.equal(s.code, 0, s.stderr);
  assert.match(s.stdout, /seen=10\.200\.0\.1\b/);
  assert.match(nsRun(hostNs, ['nft', 'list', 'table', 'ip', 'banger']), /ip saddr 172\.16\.0\.2 .*masquerade/);
});

test('a second VM gets another IP and the two reach each other; --disk-size grows its root filesystem', { skip, ...T }, async () => {
  const v2 = await d!.json(['vm', 'create', '--image', 'debian-bookworm', '--name', 'box2', '--disk-size', '3G'], { timeoutMs: 400_000 });
  assert.equal(v2.ip, '172.16.0.3');
  const a = await ssh('box1', 'exec 3<>/dev/tcp/172.16.0.3/22; head -c 7 <&3');
  assert.equal(a.stdout, 'SSH-2.0', a.stderr);
  const b = await ssh('box2', `exec 3<>/dev/tcp/${ip1}/22; head -c 7 <&3`);
  assert.equal(b.stdout, 'SSH-2.0', b.stderr);
  const ps = await d!.cli(['ps']);
  assert.match(ps.stdout, /^NAME\s+STATE\s+VMM\s+IMAGE\s+IP\s+VCPU\s+MEM\s+AGE/);
  assert.match(ps.stdout, /box2\s+running\s+qemu\s+debian-bookworm\s+172\.16\.0\.3/);
  // The first boot grew the ext4 root online to the 3 GiB disk; box1 kept the image's size.
  const kib = async (vm: string) => Number((await ssh(vm, 'df -k --output=size / | tail -n 1')).stdout.trim());
  const [big, small] = [await kib('box2'), await kib('box1')];
  assert.ok(big > 2.8 * 1024 * 1024 && big <= 3 * 1024 * 1024, `box2 root is ${big} KiB`);
  assert.ok(small < 2 * 1024 * 1024, `box1 root is ${small} KiB`);
  assert.match((await d!.cli(['vm', 'logs', 'box2'])).stdout, /banger-first-boot: step grow-root/);
});

/**
 * What box1 gets from each HOST:PORT over TCP within 3 s, probed side by side in one SSH call
 * (`rc=124`: the connection was dropped, so it hung until the timeout).
 */
async function reach(...targets: string[]): Promise<Record<string, string>> {
  const probes = targets.map((t, i) => {
    const [h, p] = t.split(':');
    return `(timeout 3 bash -c 'exec 3<>/dev/tcp/${h}/${p}; printf "GET / HTTP/1.0\\r\\n\\r\\n" >&3; cat <&3'; echo rc=$?) > /tmp/reach${i} 2>&1 &`;
  });
  const s = await ssh('box1', `${probes.join(' ')} wait; for i in ${targets.map((_, i) => i).join(' ')}; do echo "@@$i"; cat /tmp/reach$i; done`);
  assert.equal(s.code, 0, s.stderr);
  const parts = s.stdout.split(/^@@(\d+)$/m);
  const out: Record<string, string> = {};
  for (let i = 1; i < parts.length; i += 2) out[targets[Number(parts[i])]!] = parts[i + 1]!;
  return out;
}

test('egress policy on a real guest (vm update, no new boot): nat -> deny -> allow HOST:PORT -> --allow-vm -> nat, an SSH session kept throughout', {
  skip,
  ...T,
}, async () => {
  // A host service on the bridge address, and a second port of the "internet".
  const extra = [
    spawn('ip', ['netns', 'exec', hostNs, process.execPath, '-e', "require('http').createServer((q,s)=>s.end('host-service')).listen(7070,'0.0.0.0')"], {
      stdio: 'ignore',
    }),
    spawn('ip', ['netns', 'exec', inetNs, process.execPath, '-e', "require('http').createServer((q,s)=>s.end('port-8081')).listen(8081,'10.200.0.2')"], {
      stdio: 'ignore',
    }),
  ];
  try {
    // An SSH session held open across every change: `cat` echoes each line back.
    const argv = d!.cliArgv(['vm', 'ssh', 'box1', '--', 'cat']);
    const session = spawn(argv[0]!, argv.slice(1), { env: d!.env, stdio: ['pipe', 'pipe', 'inherit'] });
    const echo = lineEcho(session, 60_000);
    await echo('before');
    // nat (no policy): the world's both ports, the host service, box2.
    let r = await reach('10.200.0.2:8081', '172.16.0.1:7070');
    assert.match(r['10.200.0.2:8081']!, /port-8081/);
    assert.match(r['172.16.0.1:7070']!, /host-service/);

    const deny = await d!.cli(['vm', 'update', 'box1', '--egress', 'deny']);
    assert.equal(deny.code, 0, deny.stderr);
    r = await reach('10.200.0.2:8080', '172.16.0.1:7070', '172.16.0.3:22');
    assert.match(r['10.200.0.2:8080']!, /rc=124/, 'deny: the internet is dropped');
    assert.match(r['172.16.0.1:7070']!, /rc=124/, 'deny: the host service on the bridge address is dropped');
    assert.match(r['172.16.0.3:22']!, /rc=124/, 'deny: box2 is dropped');
    await echo('under-deny');

    const allow = await d!.cli(['vm', 'update', 'box1', '--allow', '10.200.0.2:8080']);
    assert.equal(allow.code, 0, allow.stderr);
    r = await reach('10.200.0.2:8080', '10.200.0.2:8081', '172.16.0.1:7070', '172.16.0.3:22');
    assert.match(r['10.200.0.2:8080']!, /seen=10\.200\.0\.1/, 'allow: that port, through NAT');
    assert.match(r['10.200.0.2:8081']!, /rc=124/, 'allow: another port of the same address is dropped');
    assert.match(r['172.16.0.1:7070']!, /rc=124/);
    assert.match(r['172.16.0.3:22']!, /rc=124/);

    const peer = await d!.cli(['vm', 'update', 'box1', '--allow-vm', 'box2']);
    assert.equal(peer.code, 0, peer.stderr);
    assert.match((await reach('172.16.0.3:22'))['172.16.0.3:22']!, /SSH-2\.0/, '--allow-vm opens box2');
    assert.match((await d!.cli(['vm', 'show', 'box1'])).stdout, /allow: +10\.200\.0\.2\/32:8080\/tcp, vm box2/);
    await echo('under-allow');

    const nat = await d!.cli(['vm', 'update', 'box1', '--egress', 'nat']);
    assert.equal(nat.code, 0, nat.stderr);
    r = await reach('10.200.0.2:8081', '172.16.0.1:7070');
    assert.match(r['10.200.0.2:8081']!, /port-8081/, 'nat again: everything');
    assert.match(r['172.16.0.1:7070']!, /host-service/);
    await echo('after');
    assert.equal(session.exitCode, null, 'the SSH session was never dropped');
    session.stdin!.end();
    await new Promise((r) => session.once('exit', r));
  } finally {
    for (const p of extra) p.kill('SIGKILL');
  }
});

test('stop/start (restart) keeps the disk contents', { skip, ...T }, async () => {
  assert.equal((await ssh('box2', 'echo kept-across-restart > /root/marker && sync')).code, 0);
  const st = await d!.json(['vm', 'stop', 'box2'], { timeoutMs: 200_000 });
  assert.equal(st[0].running, false);
  assert.ok(!nsLinks(hostNs).some((l) => l.ifname === st[0].tap), 'stopped VM has no tap');
  // vm start after vm stop (QEMU), then restart (stop + start) on the running VM.
  const started = await d!.json(['vm', 'start', 'box2'], { timeoutMs: 400_000 });
  assert.deepEqual(
    started.map((v: { name: string; running: boolean }) => [v.name, v.running]),
    [['box2', true]],
  );
  assert.equal((await ssh('box2', 'cat /root/marker')).stdout.trim(), 'kept-across-restart');
  const r = await d!.cli(['vm', 'restart', 'box2'], { timeoutMs: 400_000 });
  assert.equal(r.code, 0, r.stderr);
  const s = await ssh('box2', 'cat /root/marker');
  assert.equal(s.stdout.trim(), 'kept-across-restart');
  // The grow happened once: this boot found the disk size it recorded and skipped it.
  assert.doesNotMatch((await d!.cli(['vm', 'logs', 'box2'])).stdout, /grow-root/);
});

test('daemon SIGKILL while VMs run: restart adopts them, removes orphans; vm ssh still works', { skip, ...T }, async () => {
  const before = await d!.json(['vm', 'show', 'box1']);
  await d!.kill();
  // An orphan marked with this instance's id (read from its bridge's mark), and a banger-named
  // tap that carries no mark and sits on no bridge: not provably ours, so it is kept.
  const inst = /^banger:([0-9a-f]{12})/.exec(JSON.parse(nsRun(hostNs, ['ip', '-d', '-j', 'link', 'show', 'dev', 'banger0']))[0].ifalias)![1];
  nsRun(hostNs, ['ip', 'tuntap', 'add', 'dev', 'tap-deadbeef00', 'mode', 'tap']);
  nsRun(hostNs, ['ip', 'link', 'set', 'dev', 'tap-deadbeef00', 'alias', `banger:${inst}:ghost`]);
  nsRun(hostNs, ['ip', 'tuntap', 'add', 'dev', 'tap-0123401234', 'mode', 'tap']);
  d = new TestDaemon({ root: d!.root, netns: hostNs, config });
  await d.start();
  const after = await d.json(['vm', 'show', 'box1']);
  assert.equal(after.running, true);
  assert.equal(after.pid, before.pid, 'same VMM process adopted');
  assert.ok(!nsLinks(hostNs).some((l) => l.ifname === 'tap-deadbeef00'), 'orphan tap removed by reconcile');
  assert.ok(
    nsLinks(hostNs).some((l) => l.ifname === 'tap-0123401234'),
    'an unmarked tap off our bridge is not ours: kept',
  );
  nsRun(hostNs, ['ip', 'link', 'del', 'tap-0123401234']);
  assert.ok(
    nsLinks(hostNs).some((l) => l.ifname === after.tap),
    "the adopted VM's tap is kept",
  );
  const s = await ssh('box1', 'hostname');
  assert.equal(s.code, 0, s.stderr);
  assert.equal(s.stdout.trim(), 'box1');
});

test('vm logs -f follows the console and Ctrl-C ends it with 130; ssh-config --install in a fresh HOME lets plain ssh in', { skip, ...T }, async () => {
  const follow = spawn(d!.cliArgv(['vm', 'logs', '-f', 'box1'])[0]!, d!.cliArgv(['vm', 'logs', '-f', 'box1']).slice(1), {
    env: d!.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  follow.stdout.on('data', (b) => (out += b));
  const ended = new Promise<[number | null, string | null]>((r) => follow.on('close', (code, sig) => r([code, sig])));
  const seen = async (what: string) => {
    for (const deadline = Date.now() + 120_000; !out.includes(what); await new Promise((r) => setTimeout(r, 100))) {
      if (Date.now() > deadline) assert.fail(`vm logs -f never printed ${what}: ${out.slice(-500)}`);
    }
  };
  await seen('Linux version'); // what the console already held (the kernel's first line)
  const marker = `logs-follow-${Date.now()}`;
  assert.equal((await d!.cli(['vm', 'exec', 'box1', '--', 'sh', '-c', `echo ${marker} > /dev/ttyS0`], { timeoutMs: 120_000 })).code, 0);
  await seen(marker); // a line written after it started
  follow.kill('SIGINT');
  assert.deepEqual(await ended, [130, null], 'Ctrl-C ends vm logs -f with 130');

  const home = mkdtempSync(join(tmpdir(), 'banger-home-'));
  try {
    const inst = await d!.cli(['--json', 'ssh-config', '--install'], { env: { HOME: home } });
    assert.equal(inst.code, 0, inst.stderr);
    const cfg = join(home, '.ssh', 'config');
    assert.equal(JSON.parse(inst.stdout).installed, cfg);
    assert.match(readFileSync(cfg, 'utf8'), /^Include \//);
    // ssh reads the passwd home, not $HOME: point it at the installed file.
    const plain = spawnSync('ip', ['netns', 'exec', hostNs, 'ssh', '-F', cfg, '-o', 'BatchMode=yes', 'box1.vm', 'echo', 'plain-ssh-ok'], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    assert.equal(plain.status, 0, plain.stderr);
    assert.equal(plain.stdout.trim(), 'plain-ssh-ok');
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});

test('a guest whose SSH host key changes is refused by vm ssh and by plain ssh through ssh-config', { skip, ...T }, async () => {
  const home = mkdtempSync(join(tmpdir(), 'banger-home-'));
  try {
    assert.equal((await d!.cli(['ssh-config', '--install'], { env: { HOME: home } })).code, 0);
    const cfg = join(home, '.ssh', 'config');
    const plainSsh = () =>
      spawnSync('ip', ['netns', 'exec', hostNs, 'ssh', '-F', cfg, '-o', 'BatchMode=yes', 'box1.vm', 'true'], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(plainSsh().status, 0, 'plain ssh works before the key changes');
    // New host keys, as root over the agent channel (not ssh), and sshd restarted with them.
    const swap = await d!.cli(['vm', 'exec', 'box1', '--', 'sh', '-c', 'rm -f /etc/ssh/ssh_host_*key* && ssh-keygen -A && systemctl restart ssh'], {
      timeoutMs: 120_000,
    });
    assert.equal(swap.code, 0, swap.stderr);
    const viaCli = await d!.cli(['vm', 'ssh', 'box1', '--', 'true'], { timeoutMs: 120_000 });
    assert.notEqual(viaCli.code, 0, 'banger vm ssh accepted a changed host key');
    assert.match(viaCli.stderr, /host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED/i);
    const plain = plainSsh();
    assert.notEqual(plain.status, 0, 'plain ssh accepted a changed host key');
    assert.match(plain.stderr, /host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED/i);
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});

test('vm kill --signal SIGTERM stops QEMU; vm prune removes the stopped VM and only it', { skip, ...T }, async () => {
  const k = await d!.json(['vm', 'kill', '--signal', 'SIGTERM', 'box1'], { timeoutMs: 60_000 });
  assert.deepEqual(
    k.map((v: { name: string; running: boolean }) => [v.name, v.running]),
    [['box1', false]],
  );
  const p = await d!.json(['vm', 'prune'], { timeoutMs: 120_000 });
  assert.deepEqual(p.removed, ['box1']);
  assert.deepEqual(
    (await d!.json(['vm', 'list'])).map((v: { name: string }) => v.name),
    ['box2'],
  );
});

test('vm rm leaves no tap, rule, lease, process, file or pinned key', { skip, ...T }, async () => {
  const pids = (await d!.json(['vm', 'list'])).map((v: { pid: number }) => v.pid);
  const r = await d!.cli(['vm', 'rm', 'box2'], { timeoutMs: 300_000 });
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(
    nsLinks(hostNs).filter((l) => l.ifname.startsWith('tap-')),
    [],
  );
  assert.doesNotMatch(nsRun(hostNs, ['nft', 'list', 'table', 'ip', 'banger']), /banger:[0-9a-f]{12}:vm:/);
  const db = openDatabase(join(d!.root, 'banger.db'), { readOnly: true });
  try {
    assert.deepEqual(db.prepare('SELECT * FROM ip_leases').all(), []);
    assert.deepEqual(db.prepare('SELECT * FROM vms').all(), []);
  } finally {
    db.close();
  }
  for (const pid of pids) assert.equal(running(pid), false, `VMM ${pid} is gone`);
  assert.deepEqual(readdirSync(join(d!.root, 'vms')), []);
  assert.equal(readFileSync(join(d!.root, 'ssh', 'known_hosts'), 'utf8').trim(), '');
  assert.deepEqual(await d!.json(['vm', 'list']), []);
});

test('a failed create (bad --disk-size, unknown kernel) names the field and leaves nothing behind', { skip, ...T }, async () => {
  const small = await d!.cli(['--json', 'vm', 'create', '--image', 'debian-bookworm', '--name', 'bad1', '--disk-size', '1M', '--nat']);
  assert.notEqual(small.code, 0);
  const e = JSON.parse(small.stdout).error;
  assert.equal(e.code, 'E_INVALID');
  assert.match(e.message, /--disk-size/);
  const nok = await d!.cli(['--json', 'vm', 'create', '--image', 'debian-bookworm', '--name', 'bad2', '--kernel', 'no-such-kernel']);
  assert.equal(JSON.parse(nok.stdout).error.code, 'E_NOT_FOUND');
  assert.deepEqual(await d!.json(['vm', 'list']), []);
  assert.deepEqual(readdirSync(join(d!.root, 'vms')), []);
  assert.deepEqual(
    nsLinks(hostNs).filter((l) => l.ifname.startsWith('tap-')),
    [],
  );
  const db = openDatabase(join(d!.root, 'banger.db'), { readOnly: true });
  try {
    assert.deepEqual(db.prepare('SELECT * FROM ip_leases').all(), []);
  } finally {
    db.close();
  }
});
