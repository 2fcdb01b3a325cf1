import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { openDatabase } from '../../src/core/db.js';
import { migrations } from '../../src/core/migrations.js';
import { TestDaemon, isRoot, BANGER } from '../helpers/daemon.js';
import { spawnSync } from 'node:child_process';
import { cleanupAll, createNetns } from '../helpers/netns.js';

// Every daemon here runs in its own network namespace (its reconcile never acts on the host).
const needNs = isRoot() ? undefined : 'needs root (a network namespace per daemon)';
let ns = '';
before(
  () => {
    if (!needNs) ns = createNetns('daemon');
  },
  { timeout: 30_000 },
);
after(() => cleanupAll(), { timeout: 60_000 });

test('daemon serves status on its isolated socket and keeps committed state across SIGKILL', { skip: needNs }, async () => {
  const d = new TestDaemon({ netns: ns });
  try {
    await d.start();
    const st = await d.json(['daemon', 'status']);
    assert.equal(st.running, true);
    assert.equal(st.root, d.root);
    assert.equal(st.socket, join(d.root, 'bangerd.sock'));
    assert.equal(st.schemaVersion, migrations.length);
    assert.equal(statSync(d.socket).mode & 0o777, 0o660);
    // The instance id is the one in this root's database (what its taps, rules and VMMs carry).
    const idDb = openDatabase(join(d.root, 'banger.db'), { readOnly: true });
    const dbId = (idDb.prepare('SELECT id FROM instance').get() as { id: string }).id;
    idDb.close();
    assert.equal(st.instanceId, dbId);
    assert.match((await d.cli(['daemon', 'status'])).stdout, new RegExp(`instance: ${dbId}\\n`));
    const doc = await d.cli(['--json', 'doctor']); // exit 1 when a host check fails; the JSON is there either way
    assert.deepEqual(JSON.parse(doc.stdout).daemon, { running: true, pid: st.pid, instanceId: dbId, root: d.root });
    assert.match((await d.cli(['doctor'])).stdout, new RegExp(`bangerd: pid ${st.pid}, instance ${dbId}, root `));
    // Commit a row the way a service would, then crash the daemon.
    const db = openDatabase(join(d.root, 'banger.db'));
    db.prepare("INSERT INTO registry_credentials (registry, username, secret, updated_at) VALUES ('r.example', 'u', 's', 'now')").run();
    db.close();
    await d.kill();
    await d.start();
    const db2 = openDatabase(join(d.root, 'banger.db'), { readOnly: true });
    assert.equal((db2.prepare('SELECT count(*) AS n FROM registry_credentials').get() as { n: number }).n, 1);
    db2.close();
    const st2 = await d.json(['daemon', 'status']);
    assert.notEqual(st2.pid, st.pid);
    assert.equal(st2.instanceId, st.instanceId, 'the instance id survives a restart');
  } finally {
    await d.cleanup();
  }
});

test('daemon stop, status when stopped (exit 3), and temp files from a crash are removed on start', { skip: needNs }, async () => {
  const d = new TestDaemon({ netns: ns });
  try {
    await d.start();
    const stop = await d.json(['daemon', 'stop']);
    assert.equal(stop.stopped, true);
    const r = await d.cli(['daemon', 'status']);
    assert.equal(r.code, 3);
    assert.match(r.stdout, /not running/);
    const { mkdirSync, writeFileSync } = await import('node:fs');
    mkdirSync(join(d.root, 'tmp', 'pull-abc'), { recursive: true });
    writeFileSync(join(d.root, 'tmp', 'pull-abc', 'partial.tmp'), 'x');
    await d.start();
    assert.equal(existsSync(join(d.root, 'tmp', 'pull-abc')), false);
  } finally {
    await d.cleanup();
  }
});

test('the CLI starts the daemon itself when none answers and it runs as root', {
  skip: isRoot() ? false : 'needs root (autostart is for root only)',
}, async () => {
  const d = new TestDaemon({ netns: ns });
  try {
    const r = await d.cli(['--json', 'daemon', 'status']);
    assert.equal(r.code, 3, 'status never autostarts');
    const started = await d.json(['daemon', 'start']);
    assert.equal(started.started, true);
    const again = await d.json(['daemon', 'start']);
    assert.equal(again.alreadyRunning, true);
    const stop = await d.json(['daemon', 'stop']);
    assert.equal(stop.stopped, true);
    assert.equal(existsSync(d.socket), false);
  } finally {
    await d.cli(['daemon', 'stop']);
    await d.cleanup();
  }
});

test('a user outside the banger group is refused at the socket with a hint', { skip: isRoot() ? false : 'needs root to switch to nobody' }, async () => {
  const d = new TestDaemon({ netns: ns });
  try {
    await d.start();
    const { chmodSync } = await import('node:fs');
    chmodSync(d.root, 0o755);
    for (const cmd of ['status', 'start']) {
      const r = spawnSync(
        'ip',
        ['netns', 'exec', ns, 'setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups', process.execPath, BANGER, 'daemon', cmd],
        { env: d.env, encoding: 'utf8' },
      );
      // nobody can see the socket file but not connect to it (mode 0660, root:banger).
      assert.equal(r.status, 1, r.stderr);
      assert.match(r.stderr, /error: permission denied on .*bangerd\.sock/);
      assert.match(r.stderr, /hint: add yourself to the 'banger' group/);
    }
  } finally {
    await d.cleanup();
  }
});

test('bad global usage exits 2 with a message; --help teaches', async () => {
  const d = new TestDaemon({ cliOnly: true }); // none of these commands reaches a daemon
  try {
    const r = await d.cli(['kernal']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /unknown command 'kernal'/);
    assert.match(r.stderr, /Did you mean kernel\?/);
    const h = await d.cli(['--help']);
    assert.equal(h.code, 0);
    assert.match(h.stdout, /Quick start:/);
    const vmHelp = await d.cli(['vm', 'create', '--help']);
    assert.equal(vmHelp.code, 0);
    assert.match(vmHelp.stdout, /--package-mirror <url>/);
    assert.match(vmHelp.stdout, /--package-proxy <url>/);
    assert.match(vmHelp.stdout, /restored after the install/);
    const doc = await d.cli(['doctor', '--skip', 'warp-drive']);
    assert.equal(doc.code, 1);
    assert.match(doc.stderr, /unknown check 'warp-drive'/);
  } finally {
    await d.cleanup();
  }
});
