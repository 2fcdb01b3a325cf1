import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isRoot, missingTools, TestDaemon } from '../helpers/daemon.js';
import { makeStandin } from '../helpers/firecracker-standin/index.js';
import { cleanupAll, createNetns, nsRun } from '../helpers/netns.js';
import { probeFromNetns, serveInNetns } from '../helpers/ns-node.js';
import { importStandinImage } from '../helpers/standin-vm.js';

/**
 * Hostname allows (`--allow HOSTNAME[:PORT]`, issue 24, docs/network-policy.md) through the
 * daemon (own namespace, Firecracker stand-in as VMM: nothing boots) and real nftables. The
 * VM's tap is swapped for a veth into a "guest" namespace with the VM's MAC and address (as in
 * egress-policy.test.ts). A "world" namespace, reached only through NAT, runs the test's own
 * resolver (dns-packet over UDP, the daemon's `network.dns`) and TCP servers on three of its
 * addresses; nothing leaves the machine.
 *
 * World names: ok.test.example → 10.93.0.3 (TTL 600), short.test.example → 10.93.0.4 (TTL 2),
 * no.test.example → 10.93.0.2 (the VM may not resolve it).
 */

const skip = !isRoot() ? 'needs root (namespaces, taps, nft)' : missingTools('ip', 'nft', 'mkfs.ext4', 'debugfs', 'ssh-keygen');
const standin = makeStandin();
const BRIDGE = 'bgdn0';
const GATEWAY = '10.94.0.1';
const DNS_PACKET = createRequire(import.meta.url).resolve('dns-packet');
let ns = '';
let world = '';
let guest = '';
let d: TestDaemon;
let work = '';
let resolver: (ChildProcess & { out: () => string }) | undefined;
const procs: ChildProcess[] = [];

/** The world's resolver on 10.93.0.2:53: logs each question as `q:<name>`. */
const RESOLVER = `
  const dns = require(${JSON.stringify(DNS_PACKET)}), dgram = require('dgram');
  const zone = { 'ok.test.example': ['10.93.0.3', 600], 'short.test.example': ['10.93.0.4', 2], 'no.test.example': ['10.93.0.2', 30] };
  const s = dgram.createSocket('udp4');
  s.on('message', (m, r) => {
    const q = dns.decode(m); const name = q.questions[0].name; console.log('q:' + name);
    const z = zone[name];
    s.send(dns.encode({ type: 'response', id: q.id, flags: dns.RECURSION_AVAILABLE | (z ? 0 : 3), questions: q.questions,
      answers: z ? [{ type: 'A', name, ttl: z[1], data: z[0] }] : [] }), r.port, r.address);
  });
  s.bind(53, '10.93.0.2', () => console.log('ready'));
`;

const LISTEN = `
  const net = require('net'); let n = 2;
  for (const p of [80, 81]) net.createServer((s) => s.end(s.localAddress + ':' + p)).listen(p, '0.0.0.0', () => { if (--n === 0) console.log('ready'); });
`;

/** In the guest: ask the gateway for `name` A (or send `flood` junk first); prints {rcode, ips}. */
function lookup(name: string, flood = 0): { rcode: string; ips: string[] } {
  const code = `
    const dns = require(${JSON.stringify(DNS_PACKET)}), u = require('dgram').createSocket('udp4');
    u.bind(0, () => {
      for (let i = 0; i < ${flood}; i++) {
        u.send(Buffer.alloc(i % 2 ? 700 : 30, i), 53, '${GATEWAY}');
        u.send(dns.encode({ type: 'query', id: i, questions: [{ type: 'A', name: 'x' + i + '.flood.example' }] }), 53, '${GATEWAY}');
      }
      const id = 4242;
      u.on('message', (m) => { const p = dns.decode(m); if (p.id !== id) return;
        console.log(JSON.stringify({ rcode: p.rcode, ips: p.answers.filter((a) => a.type === 'A').map((a) => a.data) })); process.exit(0); });
      u.send(dns.encode({ type: 'query', id, flags: dns.RECURSION_DESIRED, questions: [{ type: 'A', name: '${name}' }] }), 53, '${GATEWAY}');
      setTimeout(() => { console.log(JSON.stringify({ rcode: 'TIMEOUT', ips: [] })); process.exit(0); }, 8000);
    });`;
  const r = spawnSync('ip', ['netns', 'exec', guest, process.execPath, '-e', code], { encoding: 'utf8', timeout: 20_000 });
  return JSON.parse(r.stdout);
}

function table(instance: string): string {
  return nsRun(ns, ['nft', 'list', 'table', 'bridge', `banger-${instance}`], { allowFailure: true });
}

/** Resolves once `ok(text)` holds for `nft list table` (checked every 200 ms); rejects naming `what` after 30 s. */
async function tableHolds(instance: string, what: string, ok: (t: string) => boolean): Promise<string> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const t = nsRun(ns, ['nft', 'list', 'table', 'bridge', `banger-${instance}`], { allowFailure: true });
    if (ok(t)) return t;
    if (Date.now() > deadline) throw new Error(`${what}: not seen within 30 s; table:\n${t}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

before(
  async () => {
    if (skip) return;
    work = mkdtempSync(join(tmpdir(), 'banger-egdns-'));
    ns = createNetns('dn');
    world = createNetns('dnw');
    nsRun(ns, ['ip', 'link', 'add', 'vworld', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', world]);
    nsRun(ns, ['ip', 'addr', 'add', '10.93.0.1/24', 'dev', 'vworld']);
    nsRun(ns, ['ip', 'link', 'set', 'vworld', 'up']);
    for (const a of ['10.93.0.2', '10.93.0.3', '10.93.0.4']) nsRun(world, ['ip', 'addr', 'add', `${a}/24`, 'dev', 'eth0']);
    nsRun(world, ['ip', 'link', 'set', 'eth0', 'up']);
    d = new TestDaemon({
      netns: ns,
      config: {
        binaries: { firecracker: standin.binary },
        vm: { stopTimeoutSeconds: 3 },
        network: { bridge: BRIDGE, subnet: '10.94.0.0/24', dns: ['10.93.0.2'] },
      },
    });
    await d.start();
    await importStandinImage(d, work, 'dnk', 'dnimg');
    resolver = await serveInNetns(procs, world, RESOLVER);
    await serveInNetns(procs, world, LISTEN);
  },
  { timeout: 600_000 },
);

after(
  async () => {
    for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
    if (d) await d.cli(['vm', 'rm', '--force', 'dn-a'], { timeoutMs: 60_000 });
    await d?.cleanup();
    cleanupAll();
    standin.remove();
    if (work) rmSync(work, { recursive: true, force: true });
  },
  { timeout: 120_000 },
);

test('--allow HOSTNAME:PORT: only allowed names resolve, their answers open that port for the TTL, nothing else passes; rm leaves nothing', {
  skip,
  timeout: 600_000,
}, async () => {
  const r = await d.cli(
    [
      '--json',
      'vm',
      'create',
      '--image',
      'dnimg',
      '--name',
      'dn-a',
      '--vmm',
      'firecracker',
      '--no-wait',
      '--allow',
      'OK.test.example:80',
      '--allow',
      'short.test.example:80',
    ],
    { timeoutMs: 120_000 },
  );
  assert.equal(r.code, 0, r.stderr);
  const vm = JSON.parse(r.stdout) as { id: string; ip: string; mac: string; tap: string; spec: { egress: string; allow: string[] } };
  assert.deepEqual([vm.spec.egress, vm.spec.allow], ['allow', ['ok.test.example:80/tcp', 'short.test.example:80/tcp']]);
  assert.match((await d.cli(['vm', 'show', 'dn-a'])).stdout, /allow: +ok\.test\.example:80\/tcp, short\.test\.example:80\/tcp/);
  const instance = /banger:([0-9a-f]{12})/.exec(nsRun(ns, ['ip', '-d', 'link', 'show', BRIDGE]))?.[1] ?? '';
  assert.ok(instance, 'the bridge carries the instance mark');
  // The seed's resolv.conf points at the gateway (the forwarder).
  const seeds = spawnSync('find', [d.root, '-name', 'seed*.img', '-o', '-name', 'seed*.ext4'], { encoding: 'utf8' }).stdout.trim().split('\n').filter(Boolean);
  assert.equal(seeds.length, 1, `one seed disk: ${seeds}`);
  assert.equal(spawnSync('debugfs', ['-R', 'cat /resolv.conf', seeds[0]!], { encoding: 'utf8' }).stdout, `nameserver ${GATEWAY}\n`);

  // The guest: a namespace behind the VM's tap, with the VM's MAC and address.
  guest = createNetns('dng');
  nsRun(ns, ['ip', 'link', 'del', vm.tap]);
  nsRun(ns, ['ip', 'link', 'add', vm.tap, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', guest]);
  nsRun(ns, ['ip', 'link', 'set', vm.tap, 'master', BRIDGE, 'up']);
  nsRun(guest, ['ip', 'link', 'set', 'eth0', 'address', vm.mac]);
  nsRun(guest, ['ip', 'addr', 'add', `${vm.ip}/24`, 'dev', 'eth0']);
  nsRun(guest, ['ip', 'link', 'set', 'eth0', 'up']);
  nsRun(guest, ['ip', 'route', 'add', 'default', 'via', GATEWAY]);

  // Before any answer: the allowed name's address is closed; the world's resolver is not reachable directly.
  assert.equal(probeFromNetns(guest, '10.93.0.3', 80), '', 'not resolved yet: dropped');
  assert.equal(probeFromNetns(guest, '10.93.0.2', 53, 'udp'), '', 'the upstream resolver is not reachable from the guest');

  // The allowed name resolves (case-insensitively) and its answer opens exactly address . port.
  assert.deepEqual(lookup('Ok.Test.Example'), { rcode: 'NOERROR', ips: ['10.93.0.3'] });
  const t = await tableHolds(instance, 'the answered address in hp-<id>', (x) =>
    /set hp-[0-9a-f]+ \{[^}]*elements = \{ 10\.93\.0\.3 \. 80 timeout 10m/s.test(x),
  );
  assert.match(t, new RegExp(`set hp-${vm.id} `));
  assert.equal(probeFromNetns(guest, '10.93.0.3', 80), '10.93.0.3:80', 'the allowed name answers on its port');
  assert.equal(probeFromNetns(guest, '10.93.0.3', 81), '', 'the same address on another port is dropped');

  // A forbidden name: NXDOMAIN from banger, never asked upstream; its address typed directly is dropped.
  assert.deepEqual(lookup('no.test.example'), { rcode: 'NXDOMAIN', ips: [] });
  assert.doesNotMatch(resolver!.out(), /q:no\.test\.example/, 'a forbidden name is never forwarded');
  assert.equal(probeFromNetns(guest, '10.93.0.2', 80), '', "a forbidden name's address is dropped");

  // A flood of junk, oversized and forbidden queries fails nothing: an allowed name still resolves.
  assert.deepEqual(lookup('ok.test.example', 500), { rcode: 'NOERROR', ips: ['10.93.0.3'] });

  // TTL: short.test.example's answer (TTL 2) opens 10.93.0.4:80, and the element expires on its own.
  assert.deepEqual(lookup('short.test.example'), { rcode: 'NOERROR', ips: ['10.93.0.4'] });
  await tableHolds(instance, 'short in the set', (x) => /10\.93\.0\.4 \. 80 timeout 2s/.test(x));
  await tableHolds(instance, 'short expired', (x) => x.includes(`set hp-${vm.id}`) && !x.includes('10.93.0.4'));
  assert.equal(probeFromNetns(guest, '10.93.0.4', 80), '', 'after the TTL the address is dropped again');
  assert.equal(probeFromNetns(guest, '10.93.0.3', 80), '10.93.0.3:80', 'the unexpired answer still passes');

  // SIGKILL the daemon and start it again: the adopted VM keeps its answered addresses, and the
  // forwarder answers it again.
  await d.kill();
  assert.equal(probeFromNetns(guest, '10.93.0.3', 80), '10.93.0.3:80', 'the answered address passes while the daemon is down');
  await d.start();
  assert.equal(JSON.parse((await d.cli(['--json', 'vm', 'show', 'dn-a'])).stdout).running, true, 'adopted');
  assert.match(table(instance), /10\.93\.0\.3 \. 80 timeout 10m/, 'the set kept across the restart');
  assert.equal(probeFromNetns(guest, '10.93.0.3', 80), '10.93.0.3:80');
  assert.deepEqual(lookup('short.test.example'), { rcode: 'NOERROR', ips: ['10.93.0.4'] }, 'the forwarder answers after adoption');
  assert.deepEqual(lookup('no.test.example'), { rcode: 'NXDOMAIN', ips: [] });

  // vm update on the running VM: taking a name out empties the answered addresses at once and the
  // name is NXDOMAIN; allowing it on every port opens the address on any port after a lookup.
  assert.equal((await d.cli(['vm', 'update', 'dn-a', '--deny', 'ok.test.example:80'])).code, 0);
  assert.doesNotMatch(table(instance), /10\.93\.0\.3/, "the denied name's answers are gone with the update");
  assert.equal(probeFromNetns(guest, '10.93.0.3', 80), '', "a denied name's address is dropped at once");
  assert.deepEqual(lookup('ok.test.example'), { rcode: 'NXDOMAIN', ips: [] });
  assert.equal((await d.cli(['vm', 'update', 'dn-a', '--allow', 'ok.test.example'])).code, 0);
  assert.deepEqual(lookup('ok.test.example'), { rcode: 'NOERROR', ips: ['10.93.0.3'] });
  assert.match(table(instance), new RegExp(`set h-${vm.id} \\{[^}]*elements = \\{ 10\\.93\\.0\\.3 timeout 10m`, 's'));
  assert.equal(probeFromNetns(guest, '10.93.0.3', 81), '10.93.0.3:81', 'a name allowed with no port: every port');

  // rm: the chain, its jumps and both sets are gone.
  assert.equal((await d.cli(['vm', 'rm', '--force', 'dn-a'], { timeoutMs: 60_000 })).code, 0);
  const left = nsRun(ns, ['nft', 'list', 'table', 'bridge', `banger-${instance}`], { allowFailure: true });
  assert.doesNotMatch(left, new RegExp(vm.id), 'nothing of the VM is left');
  assert.doesNotMatch(left, /set h-|set hp-|chain vm-|jump/);
});
