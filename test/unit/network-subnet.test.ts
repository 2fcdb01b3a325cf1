import { test } from 'node:test';
import assert from 'node:assert/strict';
import { firstFreeIp, intToIp, ipToInt, macForIp, parseSubnet } from '../../src/network/subnet.js';
import { splitIptablesLine } from '../../src/network/nat.js';
import { tapName, TAP_PATTERN } from '../../src/network/links.js';
import { isBangerError } from '../../src/core/errors.js';

test('parseSubnet: default /24 gives gateway .1, guests .2-.254, netmask', () => {
  const s = parseSubnet('172.16.0.0/24');
  assert.equal(s.gateway, '172.16.0.1');
  assert.equal(s.netmask, '255.255.255.0');
  assert.equal(intToIp(s.firstGuest), '172.16.0.2');
  assert.equal(intToIp(s.lastGuest), '172.16.0.254');
  assert.equal(s.cidr, '172.16.0.0/24');
});

test('parseSubnet: host bits are masked off; /20 netmask', () => {
  const s = parseSubnet('10.1.2.3/20');
  assert.equal(s.cidr, '10.1.0.0/20');
  assert.equal(s.netmask, '255.255.240.0');
  assert.equal(s.gateway, '10.1.0.1');
  assert.equal(intToIp(s.lastGuest), '10.1.15.254');
});

test('parseSubnet: bad input names the config field', () => {
  for (const bad of ['172.16.0.0', '172.16.0.0/31', '300.1.1.1/24', 'x/24']) {
    assert.throws(
      () => parseSubnet(bad),
      (e) => isBangerError(e) && /network\.subnet|invalid IPv4/.test(e.message),
      bad,
    );
  }
});

test('firstFreeIp: lowest unused, undefined when full', () => {
  const s = parseSubnet('192.168.5.0/29'); // guests .2-.6
  assert.equal(firstFreeIp(s, []), '192.168.5.2');
  assert.equal(firstFreeIp(s, ['192.168.5.2', '192.168.5.4']), '192.168.5.3');
  assert.equal(firstFreeIp(s, ['192.168.5.2', '192.168.5.3', '192.168.5.4', '192.168.5.5', '192.168.5.6']), undefined);
});

test('ipToInt/intToIp round trip and MAC derivation', () => {
  assert.equal(ipToInt('172.16.0.2'), 0xac100002);
  assert.equal(intToIp(0xac100002), '172.16.0.2');
  assert.equal(macForIp('172.16.0.2'), '06:00:AC:10:00:02');
});

test('tapName fits IFNAMSIZ and matches the orphan pattern', () => {
  const t = tapName('0123456789abcdef');
  assert.equal(t, 'tap-0123456789');
  assert.ok(t.length <= 15);
  assert.ok(TAP_PATTERN.test(t));
  assert.ok(!TAP_PATTERN.test('tap0'));
});

test('splitIptablesLine keeps quoted comments whole', () => {
  assert.deepEqual(splitIptablesLine('-A POSTROUTING -s 172.16.0.2/32 ! -o banger0 -m comment --comment "banger-vm:ab cd" -j MASQUERADE'), [
    '-A',
    'POSTROUTING',
    '-s',
    '172.16.0.2/32',
    '!',
    '-o',
    'banger0',
    '-m',
    'comment',
    '--comment',
    'banger-vm:ab cd',
    '-j',
    'MASQUERADE',
  ]);
});
