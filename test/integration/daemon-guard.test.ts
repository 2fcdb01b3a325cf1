import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { ramPrefix } from '../../src/images/staging.js';
import { BANGERD, TestDaemon } from '../helpers/daemon.js';
import { cleanupAll, createNetns } from '../helpers/netns.js';

after(() => cleanupAll());

/** Run one more bangerd on `d`'s root, inside its namespace, expecting it to exit (`ip netns exec` execs: same pid). */
function runDaemon(d: TestDaemon): Promise<{ code: number | null; stderr: string; pid: number }> {
  return new Promise((resolve) => {
    const p = spawn('ip', ['netns', 'exec', d.netns!, process.execPath, BANGERD], { env: d.env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    p.stderr.on('data', (c) => (stderr += c));
    const t = setTimeout(() => p.kill('SIGKILL'), 20000);
    p.on('close', (code) => {
      clearTimeout(t);
      resolve({ code, stderr, pid: p.pid! });
    });
  });
}

test('a second bangerd on the same root exits non-zero naming the first, having touched nothing', async () => {
  const d = new TestDaemon({ netns: createNetns('lock') });
  const ramMarker = join('/dev/shm', `${ramPrefix(d.root)}image-marker-x`);
  try {
    await d.start();
    const first = await d.json(['daemon', 'status']);
    // What a running import of the first daemon would have: scratch in tmp/ and RAM staging.
    mkdirSync(join(d.root, 'tmp', 'image-busy'), { recursive: true });
    writeFileSync(join(d.root, 'tmp', 'image-busy', 'layer.partial'), 'in progress');
    mkdirSync(ramMarker);
    writeFileSync(join(ramMarker, 'file'), 'in progress');
    const socketIno = lstatSync(d.socket).ino;

    const r = await runDaemon(d);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, new RegExp(`already serving ${d.root.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(pid ${first.pid}\\)`));
    assert.equal(readFileSync(join(d.root, 'tmp', 'image-busy', 'layer.partial'), 'utf8'), 'in progress');
    assert.equal(readFileSync(join(ramMarker, 'file'), 'utf8'), 'in progress');
    assert.equal(lstatSync(d.socket).ino, socketIno, 'socket untouched');
    assert.doesNotMatch(
      readFileSync(join(d.root, 'logs', 'bangerd.log'), 'utf8'),
      new RegExp(`"pid":${r.pid}\\b`),
      'the second daemon logged nothing: it ran no cleanup or reconcile',
    );
    const again = await d.json(['daemon', 'status']);
    assert.equal(again.pid, first.pid);
    assert.equal(readFileSync(join(d.root, 'bangerd.lock'), 'utf8').split(' ')[0], String(first.pid));
  } finally {
    rmSync(ramMarker, { recursive: true, force: true });
    await d.cleanup();
  }
});

test('a stale lock (dead owner, or a recycled pid) is taken over; a clean stop removes the lock', async () => {
  const d = new TestDaemon({ netns: createNetns('lock2') });
  try {
    const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' }).stdout;
    writeFileSync(join(d.root, 'bangerd.lock'), `${dead} 12345\n`);
    await d.start();
    // A lock naming a live process whose start time differs (pid reused) is stale too.
    await d.stop();
    assert.equal(existsSync(join(d.root, 'bangerd.lock')), false, d.stderr.slice(-3000));
    writeFileSync(join(d.root, 'bangerd.lock'), `${process.pid} 1\n`);
    await d.start();
    const st = await d.json(['daemon', 'status']);
    assert.equal(readFileSync(join(d.root, 'bangerd.lock'), 'utf8').split(' ')[0], String(st.pid));
  } finally {
    await d.cleanup();
  }
});

test('the socket path is never destroyed: a file, a directory or a live socket there is an error naming it', async () => {
  const d = new TestDaemon({ netns: createNetns('sock') });
  try {
    // a regular file
    writeFileSync(d.socket, 'precious');
    const f = await runDaemon(d);
    assert.notEqual(f.code, 0);
    assert.match(f.stderr, new RegExp(`socket path ${d.socket} is a regular file`));
    assert.equal(readFileSync(d.socket, 'utf8'), 'precious');
    // the CLI's autostart path refuses as well (as root it would start a daemon)
    const r = await d.cli(['image', 'list']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, new RegExp(`socket path ${d.socket} is a regular file`));
    assert.equal(readFileSync(d.socket, 'utf8'), 'precious');
    rmSync(d.socket);
    // a directory
    mkdirSync(join(d.socket, 'inner'), { recursive: true });
    const dir = await runDaemon(d);
    assert.notEqual(dir.code, 0);
    assert.match(dir.stderr, /is a directory/);
    assert.ok(existsSync(join(d.socket, 'inner')));
    rmSync(d.socket, { recursive: true });
    // a live socket of someone else
    const other = createServer(() => {});
    await new Promise<void>((res) => other.listen(d.socket, res));
    try {
      const live = await runDaemon(d);
      assert.notEqual(live.code, 0);
      assert.match(live.stderr, new RegExp(`another bangerd is already serving ${d.socket}`));
      assert.ok(lstatSync(d.socket).isSocket());
    } finally {
      await new Promise((res) => other.close(res));
    }
    // a dead socket (a crashed daemon's) is removed and the daemon starts
    const dead = spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(d.socket)}, () => process.exit(0))`]);
    assert.equal(dead.status, 0);
    assert.ok(lstatSync(d.socket).isSocket());
    await d.start();
    assert.equal((await d.json(['daemon', 'status'])).running, true);
  } finally {
    await d.cleanup();
  }
});
