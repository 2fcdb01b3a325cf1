import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { TestDaemon } from '../helpers/daemon.js';
import { cleanupAll, createNetns } from '../helpers/netns.js';

after(() => cleanupAll());

test('subcommand usage errors exit 2; under --json they print one JSON error document on stdout', async () => {
  // No daemon is started: every case fails while parsing, before any connection.
  const d = new TestDaemon({ netns: createNetns('usage') });
  try {
    const cases: [string[], RegExp][] = [
      [['vm', 'show'], /missing required argument 'name'/],
      [['kernel', 'list', '--bogus'], /unknown option '--bogus'/],
      [['vm', 'create', '--image', 'x', '--vcpu', 'many'], /--vcpu must be a whole number/],
      [['image', 'pull'], /missing required argument/],
      [['vm'], /subcommand is required/],
    ];
    for (const [args, re] of cases) {
      const plain = await d.cli(args);
      assert.equal(plain.code, 2, `${args.join(' ')}: ${plain.stderr}`);
      assert.equal(plain.stdout.trim() === '' || args.length === 1, true, `${args.join(' ')}: nothing on stdout`);
      const json = await d.cli(['--json', ...args]);
      assert.equal(json.code, 2, `--json ${args.join(' ')}: ${json.stderr}`);
      const doc = JSON.parse(json.stdout);
      assert.equal(doc.error.code, 'E_USAGE');
      assert.match(doc.error.message, re);
    }
    assert.equal((await d.cli(['vm', '--help'])).code, 0);
    assert.equal(existsSync(join(d.root, 'bangerd.sock')), false, 'no daemon was started');
  } finally {
    await d.cleanup();
  }
});

test('a reader that closes early (banger vm create --help | head -1) ends the CLI quietly with exit 0', async () => {
  const { spawn } = await import('node:child_process');
  const { BANGER } = await import('../helpers/daemon.js');
  for (let i = 0; i < 3; i++) {
    const child = spawn(BANGER, ['vm', 'create', '--help'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    // close our end before the CLI writes its help: every write after that is EPIPE
    child.stdout.destroy();
    const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
    assert.equal(code, 0, stderr);
    assert.doesNotMatch(stderr, /EPIPE|Unhandled/);
  }
});
