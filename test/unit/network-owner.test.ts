import { test } from 'node:test';
import assert from 'node:assert/strict';
import { aliasOwner, bridgeAlias, tapAlias } from '../../src/network/owner.js';
import { natComment, parseNatComment } from '../../src/network/nat.js';

/** The instance marks (owner.ts) and how they are read back: reconcile trusts only these. */
test('bridge and tap aliases name their instance; anything else names none', () => {
  assert.deepEqual(aliasOwner(bridgeAlias('0123456789ab', '/var/lib/banger')), { instance: '0123456789ab', root: '/var/lib/banger' });
  assert.deepEqual(aliasOwner(bridgeAlias('0123456789ab', '/tmp/with space')), { instance: '0123456789ab', root: '/tmp/with space' });
  assert.deepEqual(aliasOwner(tapAlias('0123456789ab', 'box.1')), { instance: '0123456789ab', root: undefined });
  for (const a of [undefined, '', 'banger', 'banger:0123', 'banger:0123456789abc:box', 'banger:0123456789AB:box', 'docker0', 'xbanger:0123456789ab:box']) {
    assert.equal(aliasOwner(a), undefined, String(a));
  }
  assert.ok(bridgeAlias('0123456789ab', '/' + 'x'.repeat(400)).length <= 255, 'ifalias stays within IFALIASZ');
});

test('NAT comments: marked with the instance, legacy ones parsed without an owner, others ignored', () => {
  assert.equal(natComment('0123456789ab', 'ffff0000ffff0000ffff'), 'banger:0123456789ab:vm:ffff0000ffff0000ffff');
  assert.deepEqual(parseNatComment('banger:0123456789ab:vm:ffff0000ffff0000ffff'), { instance: '0123456789ab', vmId: 'ffff0000ffff0000ffff' });
  assert.deepEqual(parseNatComment('banger-vm:abcd'), { vmId: 'abcd' });
  for (const c of ['', 'docker', 'banger:0123456789ab:vm:', 'banger:0123:vm:abcd', 'banger:0123456789ab:vm:xyz'])
    assert.equal(parseNatComment(c), undefined, c);
});
