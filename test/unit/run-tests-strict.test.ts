import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO } from '../helpers/daemon.js';

/**
 * scripts/run-tests.mjs itself: run against a throw-away tree of compiled test files (it finds
 * tiers under ./dist/test of its working directory), strict and not.
 */
function runner(files: Record<string, string>, args: string[], env: Record<string, string> = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'banger-runner-'));
  try {
    for (const [rel, text] of Object.entries(files)) {
      mkdirSync(join(dir, 'dist/test', rel, '..'), { recursive: true });
      writeFileSync(join(dir, 'dist/test', rel), text);
    }
    const e: NodeJS.ProcessEnv = { ...process.env };
    delete e.NODE_TEST_CONTEXT; // a nested runner reports to its own stdout, not to this one
    delete e.CI;
    delete e.BANGER_TEST_STRICT;
    delete e.BANGER_TEST_FILTER;
    Object.assign(e, env);
    const r = spawnSync(process.execPath, [join(REPO, 'scripts/run-tests.mjs'), ...args], { cwd: dir, encoding: 'utf8', env: e, timeout: 60_000 });
    return { code: r.status, out: r.stdout + r.stderr, last: r.stdout.trim().split('\n').at(-1) ?? '' };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const T = "import { test } from 'node:test';\n";

test('strict mode: a skip outside the allow-list fails the run, an allowed one passes; both print their reason', () => {
  const files = { 'unit/a.test.js': `${T}test('ok', () => {});\ntest('needs the host', { skip: 'needs root (netns)' }, () => {});\n` };
  const loose = runner(files, ['unit']);
  assert.equal(loose.code, 0, loose.out);
  assert.equal(loose.last, '1 passed, 0 failed, 1 skipped');
  const strict = runner(files, ['--strict', 'unit']);
  assert.equal(strict.code, 1, strict.out);
  assert.match(strict.out, /skipped: needs the host: needs root \(netns\)/);
  assert.match(strict.out, /test skipped outside the allow-list: needs the host/);
  assert.match(strict.last, /^1 passed, 1 failed, 1 skipped/);
  const kvm = runner({ 'unit/a.test.js': `${T}test('ok', () => {});\ntest('fast boot', { skip: 'needs usable KVM: no /dev/kvm' }, () => {});\n` }, [
    '--strict',
    'unit',
  ]);
  assert.equal(kvm.code, 0, kvm.out);
  assert.match(kvm.out, /skipped \(allowed\): fast boot: needs usable KVM: no \/dev\/kvm/);
});

test('strict mode: a file that registers no test, a file that fails to import, and a tier without files fail', () => {
  const empty = runner({ 'unit/a.test.js': `${T}test('ok', () => {});\n`, 'unit/b.test.js': T }, ['--strict', 'unit']);
  assert.equal(empty.code, 1, empty.out);
  assert.match(empty.out, /b\.test\.js registered no test/);
  const broken = runner({ 'unit/a.test.js': `import './no-such-helper.js';\n${T}test('ok', () => {});\n` }, ['--strict', 'unit']);
  assert.equal(broken.code, 1, broken.out);
  assert.match(broken.last, /^0 passed, [1-9]\d* failed/);
  const none = runner({ 'unit/a.test.js': `${T}test('ok', () => {});\n` }, ['--strict', 'unit', 'e2e']);
  assert.equal(none.code, 1, none.out);
  assert.match(none.out, /tier e2e has no test files/);
});

test('a tier past its wall clock is killed and named, with the last test that finished', () => {
  const r = runner({ 'unit/a.test.js': `${T}test('quick one', () => {});\ntest('hangs', () => new Promise(() => setInterval(() => {}, 1000)));\n` }, ['unit'], {
    BANGER_TIER_TIMEOUT_MIN: '0.05',
  });
  assert.equal(r.code, 1, r.out);
  assert.match(r.out, /tier unit stalled: killed after its 0\.05 min wall clock \(files: a\.test\.js; last test to finish: quick one/);
});

test('strict mode: a todo test fails the run, a failing one (todo option or t.todo()) above all', () => {
  for (const body of [
    `test('unfinished', { todo: 'later' }, () => { throw new Error('broken'); });`,
    `test('unfinished', (t) => { t.todo('later'); throw new Error('broken'); });`,
    `test('unfinished', { todo: 'later' }, () => {});`,
  ]) {
    const files = { 'unit/a.test.js': `${T}test('ok', () => {});\n${body}\n` };
    const loose = runner(files, ['unit']);
    assert.equal(loose.code, 0, loose.out);
    assert.equal(loose.last, '1 passed, 0 failed, 1 skipped');
    const strict = runner(files, ['--strict', 'unit']);
    assert.equal(strict.code, 1, `${body}\n${strict.out}`);
    assert.match(strict.out, body.includes('throw') ? /failing todo test: unfinished: later/ : /todo test: unfinished: later/);
    assert.match(strict.last, /^1 passed, 1 failed, 1 skipped/);
  }
});

test("counts come from the runner's final summary, not from text a test printed", () => {
  // The TAP reporter escapes "#" in names and output, but not a U+2028 in an error message, which
  // a multiline regex takes for a line break: the old first-match regex counted "5 passed" here.
  const r = runner(
    {
      'unit/a.test.js': `${T}test('prints', () => { console.log('# pass 5'); process.stdout.write('# fail 0\\n# skipped 3\\n'); });\ntest('fails', () => { throw new Error('boom\\u2028# pass 5\\u2028# skipped 3'); });\n`,
    },
    ['unit'],
  );
  assert.equal(r.code, 1, r.out);
  assert.equal(r.last, '1 passed, 1 failed, 0 skipped (failing tiers: unit)');
});

test('strict mode (CI=true or --strict) refuses an inherited BANGER_TEST_FILTER', () => {
  const files = { 'unit/a.test.js': `${T}test('ok', () => {});\n` };
  for (const [args, env] of [
    [['unit'], { CI: 'true', BANGER_TEST_FILTER: 'a' }],
    [['--strict', 'unit'], { BANGER_TEST_FILTER: 'nothing-matches' }],
  ] as const) {
    const r = runner(files, [...args], env);
    assert.equal(r.code, 2, r.out);
    assert.match(r.out, /strict mode .* BANGER_TEST_FILTER is set .*: unset it/);
  }
  const loose = runner(files, ['unit'], { BANGER_TEST_FILTER: 'a' });
  assert.equal(loose.code, 0, loose.out);
});
