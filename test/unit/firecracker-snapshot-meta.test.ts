import { test } from 'node:test';
import assert from 'node:assert/strict';
import { atLeast, NETWORK_OVERRIDES_MIN, parseFcMeta, SNAPSHOT_MIN, VSOCK_OVERRIDE_MIN } from '../../src/vms/drivers/firecracker/snapshot.js';

test('atLeast: release gates of the snapshot API (1.5 snapshots, 1.12 network_overrides, 1.16 vsock_override)', () => {
  assert.equal(atLeast('1.5.0', SNAPSHOT_MIN), true);
  assert.equal(atLeast('1.4.9', SNAPSHOT_MIN), false);
  assert.equal(atLeast('1.11.3', NETWORK_OVERRIDES_MIN), false);
  assert.equal(atLeast('1.12.0', NETWORK_OVERRIDES_MIN), true);
  assert.equal(atLeast('1.15.9', VSOCK_OVERRIDE_MIN), false);
  assert.equal(atLeast('1.16.1', VSOCK_OVERRIDE_MIN), true);
  assert.equal(atLeast('2.0.0', VSOCK_OVERRIDE_MIN), true);
});

test('parseFcMeta: a snapshot.json is checked field by field; another VMM, bad counts and a missing launch record are refused', () => {
  const good = {
    vmm: 'firecracker',
    vmmVersion: '1.16.1',
    fingerprint: 'f'.repeat(64),
    vcpu: 1,
    memoryMiB: 64,
    sharedMemory: true,
    bytes: { state: 10, memory: 67108864, disk: 5 },
    createdAt: '2026-12-08T00:00:00.000Z',
    stateSha256: 'a'.repeat(64),
    firecracker: { tap: 'bg0', vsock: '/v/vsock.sock', drives: [{ id: 'root', path: '/v/root.ext4' }] },
    extra: 'ignored',
  };
  const m = parseFcMeta(good);
  assert.equal(m.firecracker.drives[0]!.path, '/v/root.ext4');
  assert.equal('extra' in m, false);
  const bad: Array<[string, Record<string, unknown>]> = [
    ['not firecracker', { ...good, vmm: 'qemu' }],
    ['vcpu is not a count', { ...good, vcpu: -1 }],
    ['bytes.memory is not a count', { ...good, bytes: { ...good.bytes, memory: 1.5 } }],
    ['vmmVersion is not a string', { ...good, vmmVersion: 116 }],
    ['firecracker.drives is not a list', { ...good, firecracker: { tap: 'bg0', vsock: '/v' } }],
    ['firecracker.tap is not a string', { ...good, firecracker: { ...good.firecracker, tap: undefined } }],
    ['firecracker.drives[0].path is not a string', { ...good, firecracker: { ...good.firecracker, drives: [{ id: 'root' }] } }],
  ];
  for (const [why, v] of bad) assert.throws(() => parseFcMeta(v), new RegExp(why.replace(/[[\]().]/g, '\\$&')), why);
});
