import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadConfig } from '../../src/core/config.js';
import { ENV_OVERRIDES, applyEnvOverrides } from '../../src/core/config-env.js';
import { type BangerError, isBangerError } from '../../src/core/errors.js';

function invalid(fn: () => unknown): BangerError {
  try {
    fn();
  } catch (e) {
    if (isBangerError(e, 'E_INVALID')) return e;
    throw e;
  }
  assert.fail('expected E_INVALID');
}

test('env overrides pass the config schema: a bad value names the variable and the field', () => {
  const root = mkdtempSync(join(tmpdir(), 'banger-cfgenv-'));
  try {
    const vmm = invalid(() => loadConfig({ BANGER_ROOT: root, BANGER_VMM: 'kvmtool' }));
    assert.match(vmm.message, /^BANGER_VMM: /);
    assert.deepEqual(vmm.details, { field: 'vm.vmm', env: 'BANGER_VMM' });
    assert.match(invalid(() => loadConfig({ BANGER_ROOT: root, BANGER_BRIDGE: 'bad bridge name' })).message, /^BANGER_BRIDGE: an interface name is 1-15/);
    // Checked by the schema now (it was copied unchecked before): the mirror must be a URL.
    assert.match(invalid(() => loadConfig({ BANGER_ROOT: root, BANGER_DEBIAN_MIRROR: 'not a url' })).message, /^BANGER_DEBIAN_MIRROR: /);
    assert.match(invalid(() => loadConfig({ BANGER_ROOT: root, BANGER_KERNEL_CATALOGS: 'http://ok/1.json, nope' })).message, /^BANGER_KERNEL_CATALOGS: /);
    // Good values land in their fields; an override beats the file; other file fields stay.
    writeFileSync(join(root, 'config.json'), JSON.stringify({ network: { bridge: 'filebr', dns: ['9.9.9.9'] }, vm: { vcpu: 4 } }));
    const c = loadConfig({
      BANGER_ROOT: root,
      BANGER_BRIDGE: 'envbr',
      BANGER_VMM: 'qemu',
      BANGER_QEMU: '/opt/q',
      BANGER_KERNEL_CATALOGS: 'http://a/1.json, http://b/2.json',
    });
    assert.equal(c.network.bridge, 'envbr');
    assert.deepEqual(c.network.dns, ['9.9.9.9']);
    assert.equal(c.vm.vmm, 'qemu');
    assert.equal(c.vm.vcpu, 4);
    assert.equal(c.binaries.qemu, '/opt/q');
    assert.deepEqual(c.kernelCatalogs, ['http://a/1.json', 'http://b/2.json']);
    // A bad file field is still reported against the file, not a variable.
    writeFileSync(join(root, 'config.json'), JSON.stringify({ vm: { vcpu: 0 } }));
    assert.match(invalid(() => loadConfig({ BANGER_ROOT: root, BANGER_VMM: 'qemu' })).message, /^config file .*field 'vm\.vcpu'/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('applyEnvOverrides does not modify the file object and ignores unset variables', () => {
  const file = { network: { bridge: 'x' } };
  const r = applyEnvOverrides(file, { BANGER_SUBNET: '10.0.0.0/24', BANGER_VMM: '' });
  assert.deepEqual(file, { network: { bridge: 'x' } });
  assert.deepEqual(r.raw, { network: { bridge: 'x', subnet: '10.0.0.0/24' } });
  assert.deepEqual([...r.fromEnv], [['network.subnet', 'BANGER_SUBNET']]);
  assert.ok(ENV_OVERRIDES.every((o) => o.env.startsWith('BANGER_') && o.path.length > 0));
});
