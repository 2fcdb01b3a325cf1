import { test } from 'node:test';
import assert from 'node:assert/strict';
import { normaliseAllows, parseAllow } from '../../src/network/allow-spec.js';
import { policyRules } from '../../src/network/egress.js';
import { egressSpec } from '../../src/vms/egress.js';
import { RULES_VM } from '../helpers/egress-fixtures.js';

test('--allow: CIDR[:PORT[/PROTO]] parsed and canonical; bad values named', () => {
  assert.deepEqual(parseAllow('192.0.2.7'), { cidr: '192.0.2.7/32' });
  assert.deepEqual(parseAllow('10.1.2.3/8'), { cidr: '10.0.0.0/8' }, 'host bits cleared');
  assert.deepEqual(parseAllow('192.0.2.7:443'), { cidr: '192.0.2.7/32', port: 443, proto: 'tcp' });
  assert.deepEqual(parseAllow('192.0.2.0/24:53/udp'), { cidr: '192.0.2.0/24', port: 53, proto: 'udp' });
  assert.deepEqual(normaliseAllows(['192.0.2.7:443', '192.0.2.7/32:443/tcp', '0.0.0.0/0']), ['192.0.2.7/32:443/tcp', '0.0.0.0/0']);
  for (const bad of ['10.0.0.0/33', '300.0.0.1', '10.0.0.1:0', '10.0.0.1:70000', '10.0.0.1:80/sctp', 'example.com', '']) {
    assert.throws(
      () => parseAllow(bad),
      (e: Error & { code?: string }) => e.code === 'E_INVALID' && e.message.includes(`--allow '${bad}'`),
      bad,
    );
  }
});

test('egressSpec: modes, aliases, the config default, contradictions', () => {
  const none = () => false;
  const some = (n: string) => n === 'other';
  assert.deepEqual(egressSpec({}, undefined, none), { nat: false }, 'no flag: no policy, as before');
  assert.deepEqual(egressSpec({ nat: true }, undefined, none), { nat: true, egress: 'nat' }, '--nat is --egress nat');
  assert.deepEqual(egressSpec({}, 'deny', none), { nat: false, egress: 'deny' }, 'the config default applies');
  assert.deepEqual(egressSpec({ nat: true }, 'deny', none), { nat: true, egress: 'nat' }, 'a flag wins over the config');
  assert.deepEqual(egressSpec({ allow: ['192.0.2.7:80'] }, 'deny', none), { nat: true, egress: 'allow', allow: ['192.0.2.7/32:80/tcp'] });
  assert.deepEqual(egressSpec({ egress: 'allow' }, undefined, none), { nat: true, egress: 'allow', allow: [] });
  assert.deepEqual(egressSpec({ allowVm: ['other'] }, undefined, some), { nat: false, egress: 'deny', allowVm: ['other'] });
  assert.throws(() => egressSpec({ egress: 'deny', allow: ['192.0.2.7'] }, undefined, none), /--allow needs --egress allow/);
  assert.throws(() => egressSpec({ nat: true, allow: ['192.0.2.7'] }, undefined, none), /not --nat/);
  assert.throws(() => egressSpec({ nat: true, egress: 'deny' }, undefined, none), /contradicts --egress deny/);
  assert.throws(() => egressSpec({ nat: true, allowVm: ['other'] }, undefined, some), /--allow-vm/);
  assert.throws(() => egressSpec({ allowVm: ['nope'] }, undefined, some), /--allow-vm 'nope': no such vm/);
});

test('policyRules: anti-spoofing first, replies without SYN, served, pairs, subnet and broadcast dropped, allows, final drop', () => {
  const r = policyRules({
    ...RULES_VM,
    allow: [{ cidr: '192.0.2.0/24' }, { cidr: '198.51.100.7/32', port: 53, proto: 'udp' }],
    served: [{ ip: '10.0.0.1', port: 8080, proto: 'tcp' }],
    replyPorts: [8000, 22],
  });
  assert.deepEqual(r, [
    'ether saddr != 06:00:0A:00:00:05 drop',
    'arp saddr ip != 10.0.0.5 drop',
    'ether type arp accept',
    'ether type != ip drop',
    'ip saddr != 10.0.0.5 drop',
    'ip daddr 10.0.0.1 tcp sport { 22, 8000 } tcp flags & (syn | ack) != syn accept',
    'ip daddr 10.0.0.1 tcp dport 8080 accept',
    'ip saddr . ip daddr @pairs accept',
    'ip daddr 10.0.0.0/24 drop',
    'ip daddr { 224.0.0.0/4, 255.255.255.255 } drop',
    'ip daddr 192.0.2.0/24 accept',
    'ip daddr 198.51.100.7/32 udp dport 53 accept',
    'drop',
  ]);
});
