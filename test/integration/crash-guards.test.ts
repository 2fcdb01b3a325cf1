import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO } from '../helpers/daemon.js';

/**
 * The daemon's last line of defence (`installCrashGuards`): an exception thrown from a callback
 * of an RPC operation, and a promise rejection nobody handles, are logged with the operation
 * (method + request id) and the process keeps running. Run in a child process (the test runner
 * has guards of its own).
 */
test('an uncaught exception and an unhandled rejection are logged with the RPC operation; the process lives on', () => {
  const dir = mkdtempSync(join(tmpdir(), 'banger-guards-'));
  try {
    const log = join(dir, 'log.jsonl');
    const script = join(dir, 'c.mjs');
    writeFileSync(
      script,
      `import { createLogger } from '${join(REPO, 'dist/src/core/log.js')}';
import { installCrashGuards, runOp } from '${join(REPO, 'dist/src/core/ops.js')}';
installCrashGuards(createLogger({ file: '${log}', stderr: false }));
await runOp({ method: 'kernel.pull', id: 42 }, async () => {
  setTimeout(() => { throw new Error('boom from a socket handler'); }, 10);
  void Promise.reject(new Error('nobody awaited me'));
  await new Promise((r) => setTimeout(r, 200));
});
console.log('still alive');
`,
    );
    const r = spawnSync(process.execPath, [script], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /still alive/);
    const lines = readFileSync(log, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    const ex = lines.find((l) => l.msg.startsWith('uncaught exception'));
    const rej = lines.find((l) => l.msg.startsWith('unhandled rejection'));
    for (const [what, l] of [
      ['exception', ex],
      ['rejection', rej],
    ] as const) {
      assert.ok(l, `${what} logged`);
      assert.equal(l.level, 'error');
      assert.deepEqual(
        l.inFlight.map((o: { method: string; rpcId: number }) => [o.method, o.rpcId]),
        [['kernel.pull', 42]],
        `${what}: operation named`,
      );
    }
    assert.equal(ex.error, 'boom from a socket handler');
    assert.equal(ex.op?.method, 'kernel.pull', 'the throwing callback ran in the operation');
    assert.equal(rej.error, 'nobody awaited me');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
