import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { acquireRootLock, processStartTime } from '../../src/daemon/lock.js';

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
const LOCK_MODULE = new URL('../../src/daemon/lock.js', import.meta.url).href;

/** N processes race for the lock; each prints "won" (and holds it a while) or its error code. */
async function race(root: string, n: number): Promise<string[]> {
  const script = `import(${JSON.stringify(LOCK_MODULE)}).then((m) => m.acquireRootLock(${JSON.stringify(root)}, ${JSON.stringify(join(root, 'bangerd.lock'))})).then(() => { process.stdout.write('won'); setTimeout(() => {}, 1500); }, (e) => process.stdout.write(String(e.code)))`;
  const runs = Array.from(
    { length: n },
    () =>
      new Promise<string>((resolve) => {
        const p = spawn(process.execPath, ['-e', script]);
        let out = '';
        p.stdout.on('data', (d) => (out += d));
        p.on('close', () => resolve(out));
      }),
  );
  return Promise.all(runs);
}

function deadPid(): number {
  return Number(spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' }).stdout);
}

test('root lock: a free root and a stale lock are each won by exactly one of 6 racing processes', async () => {
  for (const stale of [undefined, `${deadPid()} 999\n`, 'garbage']) {
    const root = mkdtempSync(join(tmpdir(), 'banger-lock-'));
    dirs.push(root);
    if (stale) writeFileSync(join(root, 'bangerd.lock'), stale);
    const results = await race(root, 6);
    assert.equal(results.filter((r) => r === 'won').length, 1, `${stale}: ${results.join(',')}`);
    assert.ok(
      results.every((r) => r === 'won' || r === 'E_IN_USE'),
      results.join(','),
    );
    assert.deepEqual(
      readdirSync(root).filter((n) => n !== 'bangerd.lock'),
      [],
      'no temp or stale files left',
    );
  }
});

test('root lock: refused while the owner lives, naming it; released only by its owner', async () => {
  const root = mkdtempSync(join(tmpdir(), 'banger-lock-'));
  dirs.push(root);
  const path = join(root, 'bangerd.lock');
  const lock = await acquireRootLock(root, path);
  assert.equal(readFileSync(path, 'utf8'), `${process.pid} ${processStartTime(process.pid)}\n`);
  await assert.rejects(acquireRootLock(root, path), (e: any) => e.code === 'E_IN_USE' && e.message === `already serving ${root} (pid ${process.pid})`);
  writeFileSync(path, `${process.pid} 1\n`); // someone else's record now (start time differs)
  await lock.release();
  assert.equal(readFileSync(path, 'utf8'), `${process.pid} 1\n`, 'not ours: left alone');
});
