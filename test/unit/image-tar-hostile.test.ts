import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isBangerError } from '../../src/core/errors.js';
import { TarReader } from '../../src/core/tar-reader.js';

/** PAX owners and sizes a kernel would not accept are E_INVALID naming the field (archives from GNU tar --pax-option). */
const hasTar = spawnSync('tar', ['--version']).status === 0;

for (const [opt, re] of [
  ['uid:=-5', /bad PAX uid '-5'/],
  ['gid:=1.5', /bad PAX gid '1\.5'/],
  ['gid:=99999999999', /bad PAX gid '99999999999'/],
  ['size:=-1', /bad PAX size '-1'/],
] as const) {
  test(`PAX ${opt} is refused naming the entry`, { skip: !hasTar && 'GNU tar missing' }, async () => {
    const d = mkdtempSync(join(tmpdir(), 'banger-pax-'));
    try {
      writeFileSync(join(d, 'f'), 'hi\n');
      const r = spawnSync('tar', ['--format=posix', `--pax-option=${opt}`, '-C', d, '-cf', '-', 'f'], { maxBuffer: 1 << 20 });
      assert.equal(r.status, 0, String(r.stderr));
      const reader = new TarReader(() => undefined);
      await assert.rejects(reader.push(r.stdout), (e: unknown) => isBangerError(e, 'E_INVALID') && re.test(e.message) && /entry 'f'/.test(e.message));
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });
}
