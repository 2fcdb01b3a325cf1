#!/usr/bin/env node
// Runs the compiled test tiers with node's test runner and prints "N passed, N failed, N skipped".
// Usage: node scripts/run-tests.mjs [unit] [integration] [e2e] [slow]
// Default: unit integration e2e. "slow" (kernel build) runs only when named or BANGER_SLOW=1.
// A tier whose prerequisites are missing still runs: its tests skip with the reason printed.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';

const all = ['unit', 'integration', 'e2e'];
let tiers = process.argv.slice(2).filter((a) => !a.startsWith('-'));
if (tiers.length === 0) tiers = [...all, ...(process.env.BANGER_SLOW === '1' ? ['slow'] : [])];
const filter = process.env.BANGER_TEST_FILTER;

function find(dir) {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .flatMap((n) => {
      const p = join(dir, n);
      return statSync(p).isDirectory() ? find(p) : n.endsWith('.test.js') ? [p] : [];
    })
    .sort();
}

const totals = { pass: 0, fail: 0, skipped: 0 };
const failedTiers = [];
for (const tier of tiers) {
  let files = find(join('dist', 'test', tier));
  if (filter) files = files.filter((f) => f.includes(filter));
  if (files.length === 0) {
    console.log(`\n== tier ${tier}: no test files`);
    continue;
  }
  console.log(`\n== tier ${tier}: ${files.length} file(s)`);
  const tap = join(tmpdir(), `banger-tests-${process.pid}-${tier}.tap`);
  const concurrency = tier === 'unit' ? 2 : 1;
  const r = spawnSync(
    process.execPath,
    ['--test', `--test-concurrency=${concurrency}`, '--test-reporter=spec', '--test-reporter-destination=stdout', '--test-reporter=tap', `--test-reporter-destination=${tap}`, ...files],
    { stdio: 'inherit', env: { ...process.env, BANGER_TEST_TIER: tier } },
  );
  const text = existsSync(tap) ? readFileSync(tap, 'utf8') : '';
  rmSync(tap, { force: true });
  const count = (k) => Number((new RegExp(`^# ${k} (\\d+)`, 'm').exec(text) ?? [])[1] ?? 0);
  const c = { pass: count('pass'), fail: count('fail') + count('cancelled'), skipped: count('skipped') + count('todo') };
  if (r.status !== 0 && c.fail === 0) c.fail = 1; // a crash of the runner itself is a failure
  console.log(`== tier ${tier}: ${c.pass} passed, ${c.fail} failed, ${c.skipped} skipped`);
  totals.pass += c.pass;
  totals.fail += c.fail;
  totals.skipped += c.skipped;
  if (c.fail) failedTiers.push(tier);
}
console.log(`\n${totals.pass} passed, ${totals.fail} failed, ${totals.skipped} skipped${failedTiers.length ? ` (failing tiers: ${failedTiers.join(', ')})` : ''}`);
process.exit(totals.fail ? 1 : 0);
