import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildProgram } from '../../src/cli/main.js';
import { BANGER_VERSION } from '../../src/core/version.js';
import { SDK_VERSION } from '../../src/sdk/index.js';
import { BANGER, REPO } from '../helpers/daemon.js';

/**
 * One version everywhere: package.json's is src/core/version.ts's (the CLI's commander program,
 * the daemon, the SDK, the MCP server), and bin/banger's own copy, with which it answers
 * `banger --version` before loading the CLI bundle, is the same. That early answer is checked
 * to load nothing: the compile cache (opened just before the bundle is imported) is never
 * created in a fresh HOME, while a call that goes through the bundle creates it.
 */
const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string };

function banger(args: string[], home: string): { status: number | null; stdout: string; stderr: string } {
  const env: NodeJS.ProcessEnv = { ...process.env, HOME: home };
  delete env.XDG_CACHE_HOME;
  delete env.BANGER_NO_COMPILE_CACHE;
  return spawnSync(process.execPath, [BANGER, ...args], { env, encoding: 'utf8' });
}

test('package.json, src/core/version.ts, the CLI program, the SDK and bin/banger carry one version', async () => {
  assert.equal(BANGER_VERSION, pkg.version);
  assert.equal(SDK_VERSION, pkg.version);
  const { program } = await buildProgram(['node', 'banger', '--version']);
  assert.equal(program.version(), pkg.version);
  const home = mkdtempSync(join(tmpdir(), 'banger-version-'));
  try {
    for (const flag of ['--version', '-V']) {
      const r = banger([flag], home);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stdout, `${pkg.version}\n`, `bin/banger ${flag}`);
    }
    // with another flag beside it, commander answers (through the bundle): the same text
    const full = banger(['--json', '--version'], home);
    assert.equal(full.status, 0, full.stderr);
    assert.equal(full.stdout, `${pkg.version}\n`);
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});

test('bin/banger answers --version alone without loading the CLI bundle; anything else loads it', () => {
  const home = mkdtempSync(join(tmpdir(), 'banger-version-'));
  const cache = join(home, '.cache', 'banger', 'compile-cache');
  try {
    assert.equal(banger(['--version'], home).status, 0);
    assert.equal(banger(['-V'], home).status, 0);
    assert.equal(existsSync(cache), false, 'the compile cache was opened: --version went through the bundle');
    assert.equal(banger(['--json', '--version'], home).status, 0);
    assert.equal(existsSync(cache), true, 'a call through the bundle opens the compile cache (else the check above proves nothing)');
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});
