import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/**
 * One formatter and linter for the whole tree: Biome (biome.json). Formatting drift or a lint
 * error (functions over 80 lines in src/ among them, unless they carry a reason) fails the unit
 * tier. `npx biome check --write .` fixes what can be fixed automatically.
 */
const root = fileURLToPath(new URL('../../../', import.meta.url));
const biome = `${root}node_modules/.bin/biome`;

test('biome check: the tree is formatted and lint-clean', { skip: existsSync(biome) ? undefined : 'biome not installed (npm ci)' }, () => {
  const r = spawnSync(biome, ['check', '--diagnostic-level=error', '--max-diagnostics=50', '--colors=off', '.'], { cwd: root, encoding: 'utf8' });
  assert.equal(r.status, 0, `biome check failed (fix with: npx biome check --write .)\n${r.stdout}\n${r.stderr}`);
});
