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
