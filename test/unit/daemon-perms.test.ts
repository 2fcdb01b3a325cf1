import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { layout } from '../../src/core/paths.js';
import { securePermissions } from '../../src/daemon/perms.js';

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

for (const gid of [undefined, 4242]) {
  test(`securePermissions ${gid === undefined ? 'without' : 'with'} a banger group: root ${gid === undefined ? '0700' : '0710 root:banger'}, data 0700, secrets 0600`, {
    skip: process.getuid?.() === 0 ? false : 'needs root to chown',
  }, async () => {
    const root = mkdtempSync(join(tmpdir(), 'banger-perm-'));
    dirs.push(root);
    const lay = layout(root, join(root, 'bangerd.sock'));
    // an old install: everything open
    for (const d of ['ssh', 'images', 'logs']) mkdirSync(join(root, d), { mode: 0o755 });
    for (const f of ['banger.db', 'banger.db-wal', 'secret.key', 'logs/bangerd.log']) writeFileSync(join(root, f), 'x', { mode: 0o644 });
    await securePermissions(lay, gid);
    const st = (p: string) => statSync(join(root, p));
    assert.equal(st('.').mode & 0o777, gid === undefined ? 0o700 : 0o710);
    if (gid !== undefined) assert.equal(st('.').gid, gid);
    assert.equal(st('ssh').mode & 0o777, gid === undefined ? 0o700 : 0o750);
    for (const d of ['images', 'vms', 'kernels', 'tmp', 'logs', 'blobs', 'blobs/sha256']) assert.equal(st(d).mode & 0o777, 0o700, d);
    for (const f of ['banger.db', 'banger.db-wal', 'secret.key', 'logs/bangerd.log']) assert.equal(st(f).mode & 0o777, 0o600, f);
  });
}
