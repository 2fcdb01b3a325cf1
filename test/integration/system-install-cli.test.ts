import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO, TestDaemon } from '../helpers/daemon.js';

/**
 * `banger system install --root DIR` through the built CLI (bin/banger), against a throw-away
 * root: the unit it writes names this checkout's bangerd and the runtime the CLI ran on, the group
 * line is added once, and a second run changes nothing. (Unit-level checks of the unit's text:
 * test/unit/doctor-install.test.ts; activation with systemctl is only for the real root.)
 */
test('system install --root writes the unit and the banger group under a throw-away root, idempotently', async () => {
  const root = mkdtempSync(join(tmpdir(), 'banger-sysroot-'));
  const d = new TestDaemon({ cliOnly: true });
  try {
    mkdirSync(join(root, 'etc'));
    writeFileSync(join(root, 'etc/group'), 'root:x:0:\nsystemd-journal:x:999:\n');
    const r = await d.cli(['--json', 'system', 'install', '--root', root]);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    const unitPath = join(root, 'etc/systemd/system/bangerd.service');
    assert.deepEqual([out.unitPath, out.group, out.activated], [unitPath, { name: 'banger', gid: 998, created: true }, false]);
    const unit = readFileSync(unitPath, 'utf8');
    const exec = /^ExecStart=(\S+) (\S+)$/m.exec(unit);
    assert.ok(exec, unit);
    assert.equal(exec[2], join(REPO, 'bin', 'bangerd'));
    assert.equal(statSync(exec[1]!).isFile(), true, `ExecStart runtime ${exec[1]}`);
    assert.equal(statSync(unitPath).mode & 0o777, 0o644);
    assert.equal(readFileSync(join(root, 'etc/group'), 'utf8'), 'root:x:0:\nsystemd-journal:x:999:\nbanger:x:998:\n');
    const again = await d.cli(['--json', 'system', 'install', '--root', root]);
    assert.equal(again.code, 0, again.stderr);
    assert.deepEqual(JSON.parse(again.stdout).group, { name: 'banger', gid: 998, created: false });
    assert.equal(readFileSync(join(root, 'etc/group'), 'utf8'), 'root:x:0:\nsystemd-journal:x:999:\nbanger:x:998:\n');
    assert.equal(readFileSync(unitPath, 'utf8'), unit);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
