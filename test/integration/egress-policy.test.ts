import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isRoot, missingTools, TestDaemon } from '../helpers/daemon.js';
import { makeStandin } from '../helpers/firecracker-standin/index.js';
import { cleanupAll, createNetns, nsRun } from '../helpers/netns.js';
import { lineEcho } from '../helpers/line-session.js';
import { probeFromNetns, serveInNetns } from '../helpers/ns-node.js';
import { importStandinImage } from '../helpers/standin-vm.js';

/**
 * Egress policies (issue 24, docs/network-policy.md) against real nftables, taps and
 * namespaces, through the daemon (own namespace, the Firecracker stand-in as VMM: nothing
 * boots). Each VM's "guest" is a namespace of its own: the daemon's tap is swapped for a veth
 * of the same name whose far end carries the VM's MAC and address, so the frames the policy
 * sees come from where a guest's would. A "world" namespace behind the daemon's namespace
 * stands for the outside (reached through NAT); a listener on the bridge address stands for
 * the host's services.
 */

const skip = !isRoot() ? 'needs root (namespaces, taps, nft)' : missingTools('ip', 'nft', 'mkfs.ext4', 'debugfs', 'ssh-keygen');
const standin = makeStandin();
const BRIDGE = 'bgeg0';
const WORLD = '10.92.0.2';
let ns = '';
let world = '';
let d: TestDaemon;
let work = '';
let instance = '';
let worldServer: (ChildProcess & { out: () => string }) | undefined;
const procs: ChildProcess[] = [];
const guests = new Map<string, { ns: string; ip: string; id: string }>();

/** Resolves once `ok()` holds, checked as the world server prints; rejects naming `what` after 30 s. */
function worldSaid(what: string, ok: () => boolean): Promise<void> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${what}: not seen within 30 s`)), 30_000);
    const check = () => {
      if (!ok()) return;
      clearTimeout(t);
      worldServer!.stdout!.off('data', check);
      resolve();
    };
    worldServer!.stdout!.on('data', check);
    check();
  });
}

/** TCP listeners answering `<name>:<port>` to every connection (and a UDP echo with `udp`). */
const LISTEN = (name: string, ports: number[], udp?: number) => `
  const net = require('net'), dgram = require('dgram');
  let n = ${ports.length + (udp ? 1 : 0)};
  const up = () => { if (--n === 0) console.log('ready'); };
  for (const p of ${JSON.stringify(ports)}) net.createServer((s) => s.end('${name}:' + p)).listen(p, '0.0.0.0', up);
  ${udp ? `const u = dgram.createSocket('udp4'); u.on('message', (m, r) => { console.log('udp-from:' + r.address + ':' + m); u.send('${name}:udp', r.port, r.address); }); u.bind(${udp}, '0.0.0.0', up);` : ''}
`;

/** Replace the daemon's tap of `vm` with a veth of the same name whose far end is a "guest" namespace with the VM's MAC and address. */
function attachGuest(vm: { name: string; id: string; ip: string; mac: string; tap: string }): string {
  const g = createNetns(`eg${vm.name}`.slice(0, 8));
  nsRun(ns, ['ip', 'link', 'del', vm.tap]);
  nsRun(ns, ['ip', 'link', 'add', vm.tap, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', g]);
  nsRun(ns, ['ip', 'link', 'set', vm.tap, 'master', BRIDGE, 'up']);
  nsRun(g, ['ip', 'link', 'set', 'eth0', 'address', vm.mac]);
  nsRun(g, ['ip', 'addr', 'add', `${vm.ip}/24`, 'dev', 'eth0']);
  nsRun(g, ['ip', 'link', 'set', 'eth0', 'up']);
  nsRun(g, ['ip', 'route', 'add', 'default', 'via', '10.91.0.1']);
  guests.set(vm.name, { ns: g, ip: vm.ip, id: vm.id });
  return g;
}

async function create(
  name: string,
  flags: string[],
): Promise<{ name: string; id: string; ip: string; mac: string; tap: string; spec: Record<string, unknown> }> {
  const r = await d.cli(['--json', 'vm', 'create', '--image', 'egimg', '--name', name, '--vmm', 'firecracker', '--no-wait', ...flags], { timeoutMs: 120_000 });
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout);
}

function table(): string {
  return nsRun(ns, ['nft', 'list', 'table', 'bridge', `banger-${instance}`], { allowFailure: true });
}

before(
  async () => {
    if (skip) return;
    work = mkdtempSync(join(tmpdir(), 'banger-egress-'));
    ns = createNetns('eg');
    world = createNetns('egw');
    // The world: behind the daemon's namespace, reached only through NAT (it has no route back to the VM subnet).
    nsRun(ns, ['ip', 'link', 'add', 'vworld', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', world]);
    nsRun(ns, ['ip', 'addr', 'add', '10.92.0.1/24', 'dev', 'vworld']);
    nsRun(ns, ['ip', 'link', 'set', 'vworld', 'up']);
    nsRun(world, ['ip', 'addr', 'add', `${WORLD}/24`, 'dev', 'eth0']);
    nsRun(world, ['ip', 'link', 'set', 'eth0', 'up']);
    d = new TestDaemon({
      netns: ns,
      config: { binaries: { firecracker: standin.binary }, vm: { stopTimeoutSeconds: 3 }, network: { bridge: BRIDGE, subnet: '10.91.0.0/24' } },
    });
    await d.start();
    await importStandinImage(d, work, 'egk', 'egimg');
    worldServer = await serveInNetns(procs, world, LISTEN('world', [80, 81], 53));
  },
  { timeout: 600_000 },
);

after(
  async () => {
    for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
    if (d) await d.cli(['vm', 'rm', '--force', ...guests.keys()], { timeoutMs: 60_000 });
    await d?.cleanup();
    cleanupAll();
    standin.remove();
    if (work) rmSync(work, { recursive: true, force: true });
  },
  { timeout: 120_000 },
);

test('create: rules per policy; deny/allow/nat/--allow-vm hold for real traffic; SIGKILL + adopt keeps them; rm leaves nothing', {
  skip,
  timeout: 600_000,
}, async () => {
  const nat = await create('eg-nat', ['--nat']);
  const peer = await create('eg-peer', []);
  const deny = await create('eg-deny', ['--egress', 'deny']);
  const allow = await create('eg-allow', ['--allow', `${WORLD}:80`, '--allow', '10.92.0.0/30:53/udp']);
  const friend = await create('eg-friend', ['--egress', 'deny', '--allow-vm', 'eg-peer']);
  instance = /banger:([0-9a-f]{12})/.exec(nsRun(ns, ['ip', '-d', 'link', 'show', BRIDGE]))?.[1] ?? '';
  assert.ok(instance, 'the bridge carries the instance mark');
  assert.match(nsRun(ns, ['nft', 'list', 'tables']), new RegExp(`table bridge banger-${instance}\\b`), "one table of this instance's own");
  for (const vm of [nat, peer, deny, allow, friend]) attachGuest(vm);
  await serveInNetns(procs, ns, LISTEN('host', [7777]));
  for (const vm of [peer, deny, friend]) await serveInNetns(procs, guests.get(vm.name)!.ns, LISTEN(vm.name, [22, 8080]));

  // What was stored and what vm show lists.
  assert.deepEqual([deny.spec.egress, deny.spec.nat], ['deny', false]);
  assert.deepEqual([allow.spec.egress, allow.spec.nat, allow.spec.allow], ['allow', true, [`${WORLD}/32:80/tcp`, '10.92.0.0/30:53/udp']]);
  assert.equal(nat.spec.egress, 'nat');
  assert.equal(peer.spec.egress, undefined, 'no flag: no policy');
  const shown = (await d.cli(['vm', 'show', 'eg-allow'])).stdout;
  assert.match(shown, /egress: +allow/);
  assert.match(shown, /allow: +10\.92\.0\.2\/32:80\/tcp, 10\.92\.0\.0\/30:53\/udp/);
  assert.match((await d.cli(['vm', 'show', 'eg-friend'])).stdout, /allow: +vm eg-peer/);

  // One chain per VM with a policy, jumped to from input and forward on its tap; none for the others.
  const t = table();
  for (const vm of [deny, allow, friend]) {
    assert.match(t, new RegExp(`chain vm-${vm.id} \\{`));
    assert.equal(t.split(`iifname "${vm.tap}" jump vm-${vm.id}`).length - 1, 2, `${vm.name}: jumps in input and forward`);
  }
  for (const vm of [nat, peer]) assert.doesNotMatch(t, new RegExp(vm.id));

  const g = (n: string) => guests.get(n)!.ns;
  const check = () => {
    // nat (no policy): the world, the host's service and another VM, as before policies.
    assert.equal(probeFromNetns(g('eg-nat'), WORLD, 80), 'world:80', 'the world answers through NAT');
    assert.equal(probeFromNetns(g('eg-nat'), WORLD, 53, 'udp'), 'world:udp');
    assert.equal(probeFromNetns(g('eg-nat'), '10.91.0.1', 7777), 'host:7777');
    assert.equal(probeFromNetns(g('eg-nat'), peer.ip, 8080), 'eg-peer:8080');
    // deny: nothing (TCP, UDP, the host's service on the bridge address, another VM).
    assert.equal(probeFromNetns(g('eg-deny'), WORLD, 80), '', 'deny: the world is dropped');
    assert.equal(probeFromNetns(g('eg-deny'), WORLD, 53, 'udp'), '', 'deny: UDP to the world is dropped');
    assert.equal(probeFromNetns(g('eg-deny'), '10.91.0.1', 7777), '', 'deny: the host service on the bridge address is dropped');
    assert.equal(probeFromNetns(g('eg-deny'), peer.ip, 8080), '', 'deny: another VM is dropped');
    // ... but the host reaches it (SSH, published ports: the replies pass).
    assert.equal(probeFromNetns(ns, deny.ip, 22), 'eg-deny:22', 'the host reaches a deny VM on port 22');
    // allow: exactly the listed destinations.
    assert.equal(probeFromNetns(g('eg-allow'), WORLD, 80), 'world:80');
    assert.equal(probeFromNetns(g('eg-allow'), WORLD, 81), '', 'allow: another port of the allowed address is dropped');
    assert.equal(probeFromNetns(g('eg-allow'), WORLD, 53, 'udp'), 'world:udp', 'allow: CIDR:PORT/udp');
    assert.equal(probeFromNetns(g('eg-allow'), '10.91.0.1', 7777), '', 'allow: the host service is dropped');
    assert.equal(probeFromNetns(g('eg-allow'), peer.ip, 8080), '', 'allow: another VM is dropped');
    // --allow-vm: both ways between the pair, nothing else.
    assert.equal(probeFromNetns(g('eg-friend'), peer.ip, 8080), 'eg-peer:8080', '--allow-vm opens the named VM');
    assert.equal(probeFromNetns(g('eg-peer'), friend.ip, 8080), 'eg-friend:8080', '... and its replies and its own connections back');
    assert.equal(probeFromNetns(g('eg-friend'), deny.ip, 8080), '', '--allow-vm opens only the named VM');
    assert.equal(probeFromNetns(g('eg-friend'), WORLD, 80), '');
  };
  check();

  // A guest that takes another source address is dropped (no passing as another VM): a UDP
  // datagram from a second address to an allowed destination never reaches the world, while
  // one sent after it from the VM's own address does (the world prints every sender).
  nsRun(g('eg-allow'), ['ip', 'addr', 'add', '10.91.0.200/24', 'dev', 'eth0']);
  const send = (from: string, tag: string) =>
    spawnSync(
      'ip',
      [
        'netns',
        'exec',
        g('eg-allow'),
        process.execPath,
        '-e',
        `const u = require('dgram').createSocket('udp4'); u.bind(0, '${from}', () => u.send('${tag}', 53, '${WORLD}', () => u.close()));`,
      ],
      { encoding: 'utf8' },
    );
  send('10.91.0.200', 'spoofed');
  send(allow.ip, 'own');
  await worldSaid('the datagram from the own address', () => worldServer!.out().includes(':own'));
  assert.doesNotMatch(worldServer!.out(), /:spoofed/, 'a spoofed source address is dropped');
  nsRun(g('eg-allow'), ['ip', 'addr', 'del', '10.91.0.200/24', 'dev', 'eth0']);

  // SIGKILL the daemon and start it again: adopted VMs keep the same rules.
  // While it is down: a chain of a VM id no row owns (an orphan of this instance) appears, and
  // the deny VM's chain is emptied (as if lost): reconcile removes the one, refills the other.
  const before = table();
  await d.kill();
  nsRun(ns, ['nft', 'add', 'chain', 'bridge', `banger-${instance}`, 'vm-deadbeef00']);
  nsRun(ns, [
    'nft',
    'add',
    'rule',
    'bridge',
    `banger-${instance}`,
    'input',
    'iifname',
    'tap-deadbeef',
    'jump',
    'vm-deadbeef00',
    'comment',
    `"banger:${instance}:vm:deadbeef00"`,
  ]);
  nsRun(ns, ['nft', 'flush', 'chain', 'bridge', `banger-${instance}`, `vm-${deny.id}`]);
  assert.equal(probeFromNetns(g('eg-deny'), '10.91.0.1', 7777), 'host:7777', 'the emptied chain lets the deny VM through');
  await d.start();
  for (const n of ['eg-deny', 'eg-allow', 'eg-friend']) {
    const r = await d.cli(['--json', 'vm', 'show', n]);
    assert.equal(JSON.parse(r.stdout).running, true, `${n} adopted`);
  }
  assert.equal(stripHandles(table()), stripHandles(before), 'the same rules after the restart: the orphan gone, the emptied chain refilled');
  check();

  // rm: the VM's chain, jumps and pairs go; the others stay.
  assert.equal((await d.cli(['vm', 'rm', '--force', 'eg-friend'], { timeoutMs: 60_000 })).code, 0);
  guests.delete('eg-friend');
  let after = table();
  assert.doesNotMatch(after, new RegExp(friend.id));
  assert.doesNotMatch(after, new RegExp(friend.ip.replace(/\./g, '\\.')), 'the pair went with it');
  assert.match(after, new RegExp(`chain vm-${deny.id}`));
  assert.equal((await d.cli(['vm', 'rm', '--force', 'eg-deny', 'eg-allow'], { timeoutMs: 60_000 })).code, 0);
  guests.delete('eg-deny');
  guests.delete('eg-allow');
  after = table();
  assert.doesNotMatch(after, /chain vm-|jump/, 'no chain or jump left after the last policy VM is removed');
});

test('a create that fails after the network step leaves no rule behind; a bad --allow or --allow-vm is refused before anything', {
  skip,
  timeout: 300_000,
}, async () => {
  standin.setKnobs({ FC_STANDIN_FAIL_PATH: '/boot-source' });
  try {
    const r = await d.cli(['vm', 'create', '--image', 'egimg', '--name', 'eg-fail', '--vmm', 'firecracker', '--no-wait', '--egress', 'deny'], {
      timeoutMs: 120_000,
    });
    assert.notEqual(r.code, 0, 'the create failed');
  } finally {
    standin.setKnobs({});
  }
  assert.doesNotMatch(table(), /chain vm-|jump/, 'nothing left of the failed create');
  const bad = await d.cli(['vm', 'create', '--image', 'egimg', '--name', 'eg-bad', '--vmm', 'firecracker', '--no-wait', '--allow', '10.0.0.0/33']);
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /--allow '10\.0\.0\.0\/33'/);
  const both = await d.cli(['vm', 'create', '--image', 'egimg', '--name', 'eg-bad', '--vmm', 'firecracker', '--no-wait', '--nat', '--allow', '10.0.0.1']);
  assert.notEqual(both.code, 0);
  assert.match(both.stderr, /--allow needs --egress allow/);
  const noVm = await d.cli(['vm', 'create', '--image', 'egimg', '--name', 'eg-bad', '--vmm', 'firecracker', '--no-wait', '--allow-vm', 'nope']);
  assert.notEqual(noVm.code, 0);
  assert.match(noVm.stderr, /--allow-vm 'nope': no such vm/);
  assert.equal(JSON.parse((await d.cli(['--json', 'vm', 'ls'])).stdout).filter((v: { name: string }) => v.name.startsWith('eg-bad')).length, 0);
});

test("vm update: deny -> allow -> deny on a running VM, the host's session to it kept throughout; bad updates refused and nothing changed", {
  skip,
  timeout: 300_000,
}, async () => {
  const vm = await create('eg-up', ['--egress', 'deny']);
  const g = attachGuest(vm);
  // The "SSH session": an echo server on the guest's port 22 and one host client kept open.
  await serveInNetns(procs, g, `require('net').createServer((s) => s.pipe(s)).listen(22, '0.0.0.0', () => console.log('ready'));`);
  const session = spawn(
    'ip',
    [
      'netns',
      'exec',
      ns,
      process.execPath,
      '-e',
      `const s = require('net').connect(22, '${vm.ip}'); process.stdin.pipe(s); s.pipe(process.stdout); s.on('close', () => process.exit(3));`,
    ],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  );
  procs.push(session);
  const roundTrip = lineEcho(session, 20_000);
  await roundTrip('one');
  assert.equal(probeFromNetns(g, WORLD, 80), '', 'deny at first');

  const up = await d.cli(['--json', 'vm', 'update', 'eg-up', '--allow', `${WORLD}:80`]);
  assert.equal(up.code, 0, up.stderr);
  assert.deepEqual([JSON.parse(up.stdout).spec.egress, JSON.parse(up.stdout).spec.allow], ['allow', [`${WORLD}/32:80/tcp`]]);
  assert.equal(probeFromNetns(g, WORLD, 80), 'world:80', 'allowed after the update');
  assert.equal(probeFromNetns(g, WORLD, 81), '', 'only the allowed port');
  await roundTrip('two');
  assert.match((await d.cli(['vm', 'show', 'eg-up'])).stdout, /egress: +allow\n/);

  const down = await d.cli(['vm', 'update', 'eg-up', '--egress', 'deny']);
  assert.equal(down.code, 0, down.stderr);
  assert.equal(probeFromNetns(g, WORLD, 80), '', 'deny again');
  await roundTrip('three');
  assert.equal(session.exitCode, null, 'the session was never dropped');

  const before = table();
  const bad = await d.cli(['vm', 'update', 'eg-up', '--deny', '192.0.2.1']);
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /--deny '192\.0\.2\.1\/32': not in the allow list/);
  const clash = await d.cli(['vm', 'update', 'eg-up', '--egress', 'deny', '--allow', '192.0.2.1']);
  assert.notEqual(clash.code, 0);
  assert.equal(stripHandles(table()), stripHandles(before), 'a refused update changes no rule');
  assert.equal(JSON.parse((await d.cli(['--json', 'vm', 'show', 'eg-up'])).stdout).spec.egress, 'deny');

  // To nat and back to a policy: the chain goes and comes (NAT stays for allow).
  assert.equal((await d.cli(['vm', 'update', 'eg-up', '--egress', 'nat'])).code, 0);
  assert.doesNotMatch(table(), new RegExp(vm.id));
  assert.equal(probeFromNetns(g, '10.91.0.1', 7777), 'host:7777', 'nat: no policy, the host service answers');
  assert.equal((await d.cli(['vm', 'update', 'eg-up', '--allow', `${WORLD}:81`])).code, 0);
  assert.equal(probeFromNetns(g, WORLD, 81), 'world:81');
  assert.equal(probeFromNetns(g, '10.91.0.1', 7777), '', 'allow: the host service is dropped again');
  session.kill('SIGKILL');
  assert.equal((await d.cli(['vm', 'rm', '--force', 'eg-up'], { timeoutMs: 60_000 })).code, 0);
  guests.delete('eg-up');
  assert.doesNotMatch(table(), new RegExp(vm.id));
});

function stripHandles(s: string): string {
  return s.replace(/ # handle \d+/g, '');
}
