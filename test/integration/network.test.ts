import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { NetworkService } from '../../src/network/service.js';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { cleanupAll, createNetns, deleteNetns, nsLinks, nsRun, vethPair } from '../helpers/netns.js';
import { isRoot, missingTools } from '../helpers/daemon.js';
import { netnsExec, tempContext } from '../helpers/vmctx.js';

const skip = !isRoot() ? 'needs root (namespaces, taps, nft)' : missingTools('ip', 'nft', 'iptables');

let ns = '';
before(
  () => {
    if (!skip) ns = createNetns('net');
  },
  { timeout: 600_000 },
);
after(() => cleanupAll());

function vmRow(ctx: ReturnType<typeof tempContext>['ctx'], name: string, id: string) {
  ctx.db
    .prepare("INSERT INTO vms (name, id, image_name, kernel_name, spec_json, vmm, created_at) VALUES (?, ?, 'img', 'k', '{}', 'qemu', ?)")
    .run(name, id, new Date().toISOString());
}

test('bridge + tap + nft NAT rules appear, and removal leaves nothing (idempotent)', { skip }, async () => {
  const t = tempContext({ exec: netnsExec(ns), config: { network: { bridge: 'bgtest0', subnet: '10.77.0.0/24' } } });
  try {
    const net = new NetworkService(t.ctx, { natBackend: 'nft', enableForwarding: async () => void nsRun(ns, ['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']) });
    assert.equal(await net.ensureBridge(), true);
    assert.equal(await net.ensureBridge(), false, 'second ensureBridge reuses it');
    const addrs = JSON.parse(nsRun(ns, ['ip', '-j', '-4', 'addr', 'show', 'dev', 'bgtest0']));
    assert.equal(addrs[0].addr_info[0].local, '10.77.0.1');

    const id = 'aaaaaaaaaa0000000000';
    const ip = t.ctx.db.transaction(() => {
      vmRow(t.ctx, 'one', id);
      return net.leaseInTx('one');
    })();
    assert.equal(ip, '10.77.0.2');
    const d = net.describe(id, ip);
    await net.createTap(d, 'one');
    const tap = nsLinks(ns).find((l) => l.ifname === d.tap);
    assert.equal(tap?.master, 'bgtest0');

    await net.enableNat(id, ip);
    assert.equal(nsRun(ns, ['sysctl', '-n', 'net.ipv4.ip_forward']).trim(), '1');
    const ruleset = nsRun(ns, ['nft', 'list', 'table', 'ip', 'banger']);
    assert.match(ruleset, /ip saddr 10\.77\.0\.2 oifname != "bgtest0" masquerade comment "banger:[0-9a-f]{12}:vm:aaaaaaaaaa0000000000"/);
    assert.equal((await net.nat.rules()).length, 3);

    // A second VM's rules survive removal of the first one's.
    const id2 = 'bbbbbbbbbb0000000000';
    const ip2 = t.ctx.db.transaction(() => {
      vmRow(t.ctx, 'two', id2);
      return net.leaseInTx('two');
    })();
    assert.equal(ip2, '10.77.0.3');
    await net.enableNat(id2, ip2);
    await net.disableNat(id);
    await net.disableNat(id); // already gone = success
    const left = await net.nat.rules();
    assert.equal(left.length, 3);
    assert.ok(left.every((r) => r.comment === `banger:${net.instance}:vm:${id2}`));

    assert.deepEqual(await net.orphanTaps(new Set()), [d.tap]);
    assert.deepEqual(await net.orphanTaps(new Set([d.tap])), []);
    assert.deepEqual(await net.orphanNat(new Set([id])), [id2]);

    await net.removeTap(d.tap);
    await net.removeTap(d.tap); // idempotent
    assert.equal(
      nsLinks(ns).some((l) => l.ifname === d.tap),
      false,
    );
    await net.disableNat(id2);
    assert.equal((await net.nat.rules()).length, 0);
    t.ctx.db.prepare("DELETE FROM vms WHERE name = 'one'").run();
    assert.equal(net.leaseOf('one'), undefined, 'lease released with the VM row');
    assert.equal(net.leaseOf('two'), ip2);
  } finally {
    t.cleanup();
  }
});

test('leases: UNIQUE forbids a double lease; a full subnet is a clear error', { skip: !isRoot() ? 'needs root' : undefined }, () => {
  const t = tempContext({ config: { network: { subnet: '10.78.0.0/29' } } });
  try {
    const net = new NetworkService(t.ctx);
    const names = ['a', 'b', 'c', 'd', 'e'];
    const ips = names.map((n, i) =>
      t.ctx.db.transaction(() => {
        vmRow(t.ctx, n, `${i}`.repeat(12));
        return net.leaseInTx(n);
      })(),
    );
    assert.equal(new Set(ips).size, 5);
    assert.throws(
      () =>
        t.ctx.db.transaction(() => {
          vmRow(t.ctx, 'f', 'f'.repeat(12));
          return net.leaseInTx('f');
        })(),
      /no free address left in 10\.78\.0\.0\/29/,
    );
    assert.equal(
      t.ctx.db.prepare("SELECT count(*) AS n FROM vms WHERE name = 'f'").get() &&
        (t.ctx.db.prepare("SELECT count(*) AS n FROM vms WHERE name = 'f'").get() as { n: number }).n,
      0,
      'failed transaction left no VM row',
    );
    assert.throws(() => t.ctx.db.prepare('INSERT INTO ip_leases (ip, vm_name, leased_at) VALUES (?, ?, ?)').run(ips[0], 'a', 'x'), /UNIQUE|PRIMARY/);
  } finally {
    t.cleanup();
  }
});

test('iptables fallback: rules added with a comment and removed exactly', { skip }, async () => {
  const t = tempContext({ exec: netnsExec(ns), config: { network: { bridge: 'bgtest1', subnet: '10.79.0.0/24' } } });
  try {
    const net = new NetworkService(t.ctx, {
      natBackend: 'iptables',
      enableForwarding: async () => void nsRun(ns, ['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']),
    });
    await net.enableNat('cccccccccc', '10.79.0.2');
    await net.enableNat('dddddddddd', '10.79.0.3');
    assert.match(nsRun(ns, ['iptables', '-t', 'nat', '-S']), /10\.79\.0\.2\/32 ! -o bgtest1 .*banger:[0-9a-f]{12}:vm:cccccccccc.* -j MASQUERADE/);
    assert.deepEqual((await net.nat.vmIdsWithRules()).sort(), ['cccccccccc', 'dddddddddd']);
    await net.disableNat('cccccccccc');
    await net.disableNat('cccccccccc');
    assert.deepEqual(await net.nat.vmIdsWithRules(), ['dddddddddd']);
    await net.disableNat('dddddddddd');
    assert.deepEqual(await net.nat.vmIdsWithRules(), []);
  } finally {
    t.cleanup();
  }
});

/**
 * Real forwarded traffic through banger's NAT while another firewall's FORWARD policy is DROP
 * (what Docker sets). A veth in a "guest" namespace plays the VM's NIC on the bridge; an
 * "internet" namespace runs a TCP server that answers with the address it sees.
 */
test('NAT works under a FORWARD policy DROP (Docker): accepts go in front, and leave with the VM', { skip, timeout: 60_000 }, async () => {
  const guest = createNetns('fwguest');
  const inet = createNetns('fwinet');
  const t = tempContext({ exec: netnsExec(ns), config: { network: { bridge: 'bgfw0', subnet: '10.83.0.0/24' } } });
  let server: ChildProcess | undefined;
  try {
    const net = new NetworkService(t.ctx, { natBackend: 'nft', enableForwarding: async () => void nsRun(ns, ['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']) });
    await net.ensureBridge();
    vethPair(guest, 'eth0', '10.83.0.2/24', ns, 'vguest0', '10.83.0.254/32');
    nsRun(ns, ['ip', 'addr', 'flush', 'dev', 'vguest0']);
    nsRun(ns, ['ip', 'link', 'set', 'vguest0', 'master', 'bgfw0']);
    nsRun(guest, ['ip', 'route', 'add', 'default', 'via', '10.83.0.1']);
    vethPair(ns, 'vinet0', '10.84.0.1/24', inet, 'eth0', '10.84.0.2/24'); // no route back to 10.83/24: replies need the masquerade
    nsRun(ns, ['iptables', '-w', '-P', 'FORWARD', 'DROP']);
    server = spawn(
      'ip',
      [
        'netns',
        'exec',
        inet,
        process.execPath,
        '-e',
        "require('net').createServer((s) => s.end('seen=' + s.remoteAddress)).listen(8080, '10.84.0.2', () => console.log('up'))",
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    await new Promise((r) => server!.stdout!.once('data', r));
    const fetchFromGuest = () => {
      const r = spawnSync(
        'ip',
        [
          'netns',
          'exec',
          guest,
          process.execPath,
          '-e',
          "const s = require('net').connect(8080, '10.84.0.2'); s.setTimeout(1500, () => process.exit(3)); s.on('data', (d) => process.stdout.write(d)); s.on('error', () => process.exit(2))",
        ],
        { encoding: 'utf8' },
      );
      return r.status === 0 ? r.stdout : `failed (${r.status})`;
    };
    nsRun(ns, ['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);
    assert.match(fetchFromGuest(), /^failed/, 'without banger rules the DROP policy blocks the guest');

    const id = 'eeeeeeeeee0000000000';
    await net.enableNat(id, '10.83.0.2');
    assert.equal(fetchFromGuest(), 'seen=10.84.0.1', 'forwarded and masqueraded despite the DROP policy');
    const fwd = nsRun(ns, ['iptables', '-w', '-S', 'FORWARD']).split('\n');
    assert.match(fwd[1] ?? '', /banger:[0-9a-f]{12}:vm:eeeeeeeeee0000000000/, 'our accepts come first');
    assert.equal((await net.nat.rules()).length, 5, 'three nft rules and two iptables accepts');
    assert.deepEqual(await net.nat.vmIdsWithRules(), [id]);

    await net.disableNat(id);
    assert.equal((await net.nat.rules()).length, 0);
    assert.doesNotMatch(nsRun(ns, ['iptables', '-w', '-S']), /banger:/);
    assert.match(nsRun(ns, ['iptables', '-w', '-S', 'FORWARD']), /^-P FORWARD DROP$/m, "the other firewall's policy is left as it was");
    assert.match(fetchFromGuest(), /^failed/);
  } finally {
    server?.kill('SIGKILL');
    nsRun(ns, ['iptables', '-w', '-P', 'FORWARD', 'ACCEPT'], { allowFailure: true });
    nsRun(ns, ['ip', 'link', 'del', 'vinet0'], { allowFailure: true });
    deleteNetns(guest);
    deleteNetns(inet);
    t.cleanup();
  }
});
