import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadConfig } from '../../src/core/config.js';
import { isBangerError } from '../../src/core/errors.js';

/** Config `firecracker.jailer`: disabled by default, file values checked, BANGER_FIRECRACKER_JAILER overrides `enabled`. */
test('firecracker.jailer: defaults, file, env override, bad values named', () => {
  const root = mkdtempSync(join(tmpdir(), 'banger-cfgjail-'));
  try {
    assert.deepEqual(loadConfig({ BANGER_ROOT: root }).firecracker.jailer, {
      enabled: false,
      binary: 'jailer',
      chrootBaseDir: '/srv/jailer',
      uidBase: 900_000,
      cgroupVersion: 2,
      parentCgroup: 'banger',
    });
    assert.equal(loadConfig({ BANGER_ROOT: root, BANGER_FIRECRACKER_JAILER: '1' }).firecracker.jailer.enabled, true);
    writeFileSync(join(root, 'config.json'), JSON.stringify({ firecracker: { jailer: { enabled: true, chrootBaseDir: '/j', cgroupVersion: 1 } } }));
    const j = loadConfig({ BANGER_ROOT: root }).firecracker.jailer;
    assert.deepEqual([j.enabled, j.chrootBaseDir, j.cgroupVersion, j.binary], [true, '/j', 1, 'jailer']);
    assert.equal(loadConfig({ BANGER_ROOT: root, BANGER_FIRECRACKER_JAILER: 'false' }).firecracker.jailer.enabled, false);
    const bad = (cfg: unknown, env: Record<string, string> = {}) => {
      writeFileSync(join(root, 'config.json'), JSON.stringify(cfg));
      try {
        loadConfig({ BANGER_ROOT: root, ...env });
      } catch (e) {
        assert.ok(isBangerError(e, 'E_INVALID'));
        return (e as Error).message;
      }
      assert.fail('expected E_INVALID');
    };
    assert.match(bad({ firecracker: { jailer: { cgroupVersion: 3 } } }), /cgroupVersion/);
    assert.match(bad({ firecracker: { jailer: { chrootBaseDir: 'relative' } } }), /chrootBaseDir/);
    assert.match(bad({ firecracker: { jailer: { nope: 1 } } }), /nope/);
    assert.match(bad({}, { BANGER_FIRECRACKER_JAILER: 'maybe' }), /^BANGER_FIRECRACKER_JAILER: /);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
