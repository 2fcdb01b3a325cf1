import { test } from 'node:test';
import assert from 'node:assert/strict';
import dnsPacket from 'dns-packet';
import { isHostAllow, normaliseAllows, parseHostAllow, splitAllows } from '../../src/network/allow-spec.js';
import { answerPolicy, resolvedOf } from '../../src/network/dns-forwarder.js';
import { policyRules } from '../../src/network/egress.js';
import { egressSpec } from '../../src/vms/egress.js';
import { RULES_VM } from '../helpers/egress-fixtures.js';

test('--allow HOSTNAME[:PORT]: parsed, lower-cased and canonical; bad names and ports named', () => {
  assert.deepEqual(parseHostAllow('PyPI.org:443'), { host: 'pypi.org', port: 443 });
  assert.deepEqual(parseHostAllow('example.com.'), { host: 'example.com' }, 'a trailing dot is dropped');
  assert.deepEqual(parseHostAllow('a-b.example.com:80/tcp'), { host: 'a-b.example.com', port: 80 });
  assert.equal(isHostAllow('example.com:443'), true);
  assert.equal(isHostAllow('192.0.2.7:443/tcp'), false);
  assert.deepEqual(normaliseAllows(['Example.com:443', 'example.com:443/tcp', '192.0.2.7', 'example.com']), [
    'example.com:443/tcp',
    '192.0.2.7/32',
    'example.com',
  ]);
  assert.deepEqual(splitAllows(['example.com:443/tcp', '192.0.2.7/32', 'example.com']), {
    cidrs: [{ cidr: '192.0.2.7/32' }],
    hosts: [{ host: 'example.com', port: 443 }, { host: 'example.com' }],
  });
  for (const bad of [
    'localhost',
    '-a.example.com',
    'a-.example.com',
    'a..example.com',
    'example.com:0',
    'example.com:70000',
    'example.com:53/udp',
    `${'a'.repeat(64)}.com`,
    `${'a.'.repeat(127)}com`,
    'ex_ample.com',
    'example.123',
  ]) {
    assert.throws(
      () => normaliseAllows([bad]),
      (e: Error & { code?: string }) => e.code === 'E_INVALID' && e.message.includes(`--allow '${bad}'`),
      bad,
    );
  }
  assert.deepEqual(
    egressSpec({ allow: ['example.com:443'] }, undefined, () => false),
    { nat: true, egress: 'allow', allow: ['example.com:443/tcp'] },
  );
});

test('policyRules with hostname allows: DNS to the gateway before the subnet drop, the timeout sets before the final drop', () => {
  const r = policyRules({
    ...RULES_VM,
    allow: [],
    served: [],
    replyPorts: [],
    hosts: [{ host: 'example.com', port: 443 }],
  });
  const at = (rule: string) => {
    const i = r.indexOf(rule);
    assert.ok(i >= 0, `missing: ${rule}`);
    return i;
  };
  assert.ok(at('ip daddr 10.0.0.1 udp dport 53 accept') < at('ip daddr 10.0.0.0/24 drop'));
  assert.ok(at('ip saddr != 10.0.0.5 drop') < at('ip daddr 10.0.0.1 udp dport 53 accept'), 'anti-spoofing first: the source names the VM');
  assert.ok(at('ip daddr . tcp dport @hp-ab12 accept') < at('drop'));
  assert.ok(at('ip daddr @h-ab12 accept') < at('drop'));
  const none = policyRules({
    ...RULES_VM,
    allow: [],
    served: [],
    replyPorts: [],
  });
  assert.ok(!none.some((x) => x.includes('dport 53') || x.includes('@h')), 'no hostname allow: no DNS, no sets');
});

const query = (name: string, type: dnsPacket.RecordType = 'A', extra: Partial<dnsPacket.Packet> = {}) =>
  dnsPacket.decode(dnsPacket.encode({ type: 'query', id: 7, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type, name, class: 'IN' }], ...extra }));

test('answerPolicy: allowed A forwarded, other types empty, other names NXDOMAIN, unknown sources dropped', () => {
  const hosts = [{ host: 'ok.test.example', port: 80 }, { host: 'ok.test.example' }];
  assert.deepEqual(answerPolicy(query('ok.test.example'), hosts), { kind: 'forward', name: 'ok.test.example', allows: hosts });
  assert.deepEqual(answerPolicy(query('OK.Test.Example.'), hosts), { kind: 'forward', name: 'ok.test.example', allows: hosts }, 'case and trailing dot');
  assert.deepEqual(answerPolicy(query('ok.test.example', 'AAAA'), hosts), { kind: 'empty' });
  assert.deepEqual(answerPolicy(query('ok.test.example', 'TXT'), hosts), { kind: 'empty' });
  assert.deepEqual(answerPolicy(query('no.test.example'), hosts), { kind: 'nxdomain' });
  assert.deepEqual(answerPolicy(query('sub.ok.test.example'), hosts), { kind: 'nxdomain' }, 'a subdomain is another name');
  assert.deepEqual(answerPolicy(query('test.example'), hosts), { kind: 'nxdomain' });
  assert.deepEqual(answerPolicy(query('ok.test.example'), undefined), { kind: 'drop' }, 'a source with no hostname allow');
  assert.deepEqual(answerPolicy(query('ok.test.example', 'A', { type: 'response' }), hosts), { kind: 'drop' }, 'a response is no query');
  const two = dnsPacket.decode(
    dnsPacket.encode({
      type: 'query',
      id: 1,
      questions: [
        { type: 'A', name: 'ok.test.example' },
        { type: 'A', name: 'no.test.example' },
      ],
    }),
  );
  assert.deepEqual(answerPolicy(two, hosts), { kind: 'refused' }, 'one question only');
});

test('resolvedOf: A records opened per allow (port or every port), grouped by TTL; other records ignored', () => {
  const answers: dnsPacket.Answer[] = [
    { type: 'CNAME', name: 'ok.test.example', ttl: 60, data: 'real.test.example' },
    { type: 'A', name: 'real.test.example', ttl: 2, data: '10.93.0.2' },
    { type: 'A', name: 'real.test.example', ttl: 30, data: '10.93.0.3' },
  ];
  const r = resolvedOf(answers, [{ host: 'ok.test.example', port: 80 }, { host: 'ok.test.example' }]);
  assert.deepEqual(
    [...r.entries()],
    [
      [2, [{ ip: '10.93.0.2', port: 80 }, { ip: '10.93.0.2' }]],
      [30, [{ ip: '10.93.0.3', port: 80 }, { ip: '10.93.0.3' }]],
    ],
  );
  const many = Array.from({ length: 100 }, (_, i): dnsPacket.Answer => ({ type: 'A', name: 'x.example', ttl: 5, data: `10.0.0.${i}` }));
  assert.equal(resolvedOf(many, [{ host: 'x.example' }]).get(5)!.length, 32, 'at most 32 A records per answer');
});
