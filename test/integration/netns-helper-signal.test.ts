import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const helper = fileURLToPath(new URL('../helpers/netns.js', import.meta.url));

function namespaces(): string[] {
  return execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .map((l) => l.split(' ')[0]!)
    .filter(Boolean);
}

// A benchmark or test interrupted by a signal (Ctrl-C, the runner's timeout) must not leave its
// namespaces (and what runs in them) behind: the helper turns the signal into an exit.
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  test(`netns helper: ${sig} to a process holding a namespace removes it`, async () => {
    const code = `const m = await import(${JSON.stringify(helper)}); const n = m.createNetns('sig'); console.log(n); setInterval(() => {}, 1000);`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', code], {
      stdio: ['ignore', 'pipe', 'inherit'],
      // Not a test file: without this the child speaks node:test's protocol to the runner.
      env: { ...process.env, NODE_TEST_CONTEXT: undefined },
    });
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (d: string) => (out += d));
    while (!out.includes('\n')) await once(child.stdout, 'data');
    const ns = out.trim();
    assert.ok(namespaces().includes(ns), `namespace ${ns} exists while the process runs`);
    child.kill(sig);
    const [code_, signal] = await once(child, 'exit');
    assert.equal(signal, null, 'the process exits by itself, not killed by the signal');
    assert.equal(code_, sig === 'SIGINT' ? 130 : 143);
    assert.ok(!namespaces().includes(ns), `namespace ${ns} is gone after ${sig}`);
  });
}
