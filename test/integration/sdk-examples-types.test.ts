import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { REPO } from '../helpers/daemon.js';

/**
 * examples/*.ts compile as a user's program would: `import { Banger } from 'banger'` through
 * the package's exports map to the emitted .d.ts, strict, with library checking on (so the
 * declarations themselves must type-check). test/e2e/sdk-mcp.test.ts runs them on a guest.
 */
test('the examples type-check against the package .d.ts (strict, skipLibCheck off)', () => {
  const tsc = join(REPO, 'node_modules', 'typescript', 'bin', 'tsc');
  const r = spawnSync(process.execPath, [tsc, '-p', join(REPO, 'examples', 'tsconfig.json')], { encoding: 'utf8', timeout: 300_000 });
  assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
});
