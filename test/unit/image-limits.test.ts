import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigSchema, loadConfig } from '../../src/core/config.js';
import { isBangerError } from '../../src/core/errors.js';
import { DEFAULT_LIMITS } from '../../src/images/apply.js';

/** Config `imageLimits`: defaults shared with the applier, partial overrides, bad values named. */
test('imageLimits defaults match the applier and can be overridden one key at a time', () => {
  assert.deepEqual(ConfigSchema.parse({}).imageLimits, DEFAULT_LIMITS);
  assert.deepEqual(ConfigSchema.parse({ imageLimits: { maxEntries: 10 } }).imageLimits, { ...DEFAULT_LIMITS, maxEntries: 10 });
});

test('a bad imageLimits value is an error naming the field', () => {
  const d = mkdtempSync(join(tmpdir(), 'banger-limits-'));
  try {
    for (const [bad, field] of [
      [{ maxEntries: 0 }, 'imageLimits.maxEntries'],
      [{ maxBytes: 1.5 }, 'imageLimits.maxBytes'],
      [{ maxFiles: 3 }, 'imageLimits'],
    ] as const) {
      const f = join(d, 'config.json');
      writeFileSync(f, JSON.stringify({ imageLimits: bad }));
      assert.throws(
        () => loadConfig({ BANGER_CONFIG: f }),
        (e: unknown) => isBangerError(e, 'E_INVALID') && e.message.includes(`field '${field}'`),
      );
    }
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});
