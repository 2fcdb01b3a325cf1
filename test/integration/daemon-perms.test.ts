import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { openDb } from '../../src/core/db.js';
import { SEALED_PREFIX } from '../../src/core/secrets.js';
import { isRoot, TestDaemon } from '../helpers/daemon.js';
import { cleanupAll, createNetns } from '../helpers/netns.js';

after(() => cleanupAll());

/** Every path under `root` (root included), found as root. */
function walk(root: string): string[] {
  const out = [root];
  for (const n of readdirSync(root)) {
    const p = join(root, n);
    const st = statSync(p, { throwIfNoEntry: false });
    if (st?.isDirectory()) out.push(...walk(p));
    else out.push(p);
  }
  return out;
}

/** The paths user `nobody` (no groups) can open for reading, or list when they are directories. */
function readableByNobody(paths: string[]): string[] {
  const script = `const fs=require('fs');const ok=[];for(const p of JSON.parse(require('fs').readFileSync(0,'utf8'))){try{const st=fs.statSync(p);if(st.isDirectory())fs.readdirSync(p);else if(!st.isSocket()){fs.closeSync(fs.openSync(p,'r'))}else continue;ok.push(p)}catch{}}process.stdout.write(JSON.stringify(ok))`;
  const r = spawnSync('setpriv', ['--reuid=nobody', '--regid=nogroup', '--clear-groups', process.execPath, '-e', script], {
    input: JSON.stringify(paths),
    encoding: 'utf8',
  });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as string[];
}

test('state is private: an old world-readable install is migrated on start and nobody can read anything under the root', {
  skip: isRoot() ? false : 'needs root to switch to nobody',
}, async () => {
  const d = new TestDaemon({ netns: createNetns('perms') });
  try {
    // An installation as an older banger left it: 0755 dirs, 0644 database with a plain password.
    chmodSync(d.root, 0o755);
    const db = openDb(join(d.root, 'banger.db'));
    db.exec('CREATE TABLE IF NOT EXISTS t (x)');
    db.close();
    chmodSync(join(d.root, 'banger.db'), 0o644);
    for (const dir of ['images/old', 'vms/old', 'kernels/old', 'logs', 'blobs/sha256']) mkdirSync(join(d.root, dir), { recursive: true, mode: 0o755 });
    writeFileSync(join(d.root, 'images', 'old', 'rootfs.ext4'), 'private image', { mode: 0o644 });
    writeFileSync(join(d.root, 'vms', 'old', 'root.qcow2'), 'private disk', { mode: 0o644 });
    writeFileSync(join(d.root, 'logs', 'bangerd.log'), '{}\n', { mode: 0o644 });
    // The check below can fail: before the daemon runs, nobody reads the old install.
    const before = readableByNobody(walk(d.root));
    assert.ok(before.includes(join(d.root, 'banger.db')) && before.includes(join(d.root, 'images', 'old', 'rootfs.ext4')), before.join(', '));

    await d.start();
    // A password stored in plain text by an older banger, then a restart seals it.
    const w = openDb(join(d.root, 'banger.db'));
    w.prepare("INSERT INTO registry_credentials (registry, username, secret, updated_at) VALUES ('r.example', 'u', 'hunter2-plain', 'now')").run();
    w.close();
    await d.stop();
    await d.start();
    await d.json(['image', 'list']);

    const ro = openDb(join(d.root, 'banger.db'));
    const row = ro.prepare("SELECT secret FROM registry_credentials WHERE registry = 'r.example'").get() as { secret: string };
    ro.close();
    assert.ok(row.secret.startsWith(SEALED_PREFIX), row.secret);
    assert.ok(!row.secret.includes('hunter2'));

    const mode = (p: string) => statSync(join(d.root, p)).mode & 0o777;
    assert.equal(mode('.') & 0o007, 0, 'root not open to others');
    for (const f of ['banger.db', 'banger.db-wal', 'banger.db-shm', 'secret.key', 'bangerd.lock', 'logs/bangerd.log']) assert.equal(mode(f), 0o600, f);
    for (const dir of ['images', 'vms', 'kernels', 'blobs', 'blobs/sha256', 'tmp', 'logs']) assert.equal(mode(dir), 0o700, dir);

    const paths = walk(d.root);
    assert.ok(paths.length > 15, `${paths.length} paths`);
    assert.deepEqual(readableByNobody(paths), [], 'nobody can read nothing under the root');
  } finally {
    await d.cleanup();
  }
});
