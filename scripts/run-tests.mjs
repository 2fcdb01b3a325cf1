#!/usr/bin/env node
// Runs the compiled test tiers with node's test runner and prints "N passed, N failed, N skipped".
// Usage: node scripts/run-tests.mjs [--strict] [unit] [integration] [e2e] [slow]
// Default: unit integration e2e. "slow" (kernel build) runs only when named or BANGER_SLOW=1.
//
// Strict mode (--strict, or CI=true; what .ci/run uses) cannot pass by skipping:
//   - every skipped test fails the run unless its reason starts with an ALLOWED_SKIPS prefix
//     (each skip, allowed or not, is printed with its reason);
//   - a todo test fails the run (node counts a todo as neither passed nor failed, even one that
//     throws);
//   - a tier that executed zero tests, or has no test files, fails;
//   - BANGER_TEST_FILTER is refused (exit 2): CI runs every file, and a filter inherited from a
//     developer's shell would quietly run a few;
//   - a test file that fails to load (a helper that does not import) already fails: node --test
//     reports the file as a failed test.
// Counts come from node's own final summary, through scripts/test-events-reporter.mjs (an event
// reporter, not a text stream a test could write "# pass 5" into).
// Timeouts: every test and hook gets node's --test-timeout (BANGER_TEST_TIMEOUT_MS, default
// 15 min; tests that need less set their own), and each tier a wall clock
// (BANGER_TIER_TIMEOUT_MIN, per tier below); a tier past its wall clock is killed and reported
// as "tier X stalled after N min" with the last test it started.
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { pathToFileURL } from 'node:url';

/**
 * The only skips strict mode accepts: hardware this CI does not have. A test skips with a reason
 * that starts with one of these prefixes (and says why after it).
 */
const ALLOWED_SKIPS = [
  'needs usable KVM', // /dev/kvm read-write and vmx/svm in /proc/cpuinfo (HOST.md: CI has neither)
  'needs a Firecracker binary', // none in Debian or npm, cannot be built here (HOST.md)
];

/**
 * Wall clock per tier in minutes (a fresh machine builds debootstrap images and boots TCG guests
 * in e2e; the headline first-boot install alone is 6-13 min under TCG). A tier past it is killed.
 */
const TIER_MINUTES = { unit: 5, integration: 12, e2e: 30, slow: 90 };

const all = ['unit', 'integration', 'e2e'];
const args = process.argv.slice(2);
const strict = args.includes('--strict') || process.env.CI === 'true' || process.env.BANGER_TEST_STRICT === '1';
let tiers = args.filter((a) => !a.startsWith('-'));
if (tiers.length === 0) tiers = [...all, ...(process.env.BANGER_SLOW === '1' ? ['slow'] : [])];
const filter = process.env.BANGER_TEST_FILTER;
if (strict && filter !== undefined) {
  // CI runs every test: a filter inherited from a developer's shell would quietly run a few files
  // and turn the empty-tier check off.
  console.error(`run-tests: strict mode (--strict or CI=true) runs every test file; BANGER_TEST_FILTER is set (${JSON.stringify(filter)}): unset it`);
  process.exit(2);
}
const reporter = pathToFileURL(join(import.meta.dirname, 'test-events-reporter.mjs')).href;
const testTimeout = Number(process.env.BANGER_TEST_TIMEOUT_MS || 15 * 60_000);

function find(dir) {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .flatMap((n) => {
      const p = join(dir, n);
      return statSync(p).isDirectory() ? find(p) : n.endsWith('.test.js') ? [p] : [];
    })
    .sort();
}

/**
 * What the events reporter (scripts/test-events-reporter.mjs) wrote for one tier: the runner's
 * final summary (counts come from it only), skipped and todo tests, and files that registered no
 * test. A missing summary (a runner killed or crashed) is null.
 */
export function readEvents(text) {
  const out = { summary: null, skips: [], todos: [], empty: [] };
  for (const line of text.split('\n')) {
    if (!line) continue;
    const e = JSON.parse(line);
    if (e.kind === 'summary') out.summary = e.counts;
    else if (e.kind === 'skip') out.skips.push(e);
    else if (e.kind === 'todo') out.todos.push(e);
    else if (e.kind === 'empty') out.empty.push(e.file);
  }
  return out;
}

function runTier(argv, env, minutes) {
  return new Promise((resolve) => {
    const child = spawn(argv[0], argv.slice(1), { stdio: ['inherit', 'pipe', 'inherit'], env, detached: true });
    let stalled = false;
    let last; // the spec reporter prints a test when it ends: the last one names where a stall began
    let partial = '';
    child.stdout.on('data', (d) => {
      process.stdout.write(d);
      const lines = (partial + d).split('\n');
      partial = lines.pop();
      for (const l of lines) {
        const m = /^\s*[✔✖﹣] (.*?)(?: \([\d.]+m?s\))?(?: # .*)?$/.exec(l);
        if (m) last = m[1];
      }
    });
    const kill = (sig) => {
      try {
        process.kill(-child.pid, sig); // the runner and every test process it started
      } catch {
        /* already gone */
      }
    };
    let hard;
    const timer = setTimeout(() => {
      stalled = true;
      kill('SIGTERM'); // lets node's runner report the test it was running as cancelled
      hard = setTimeout(() => kill('SIGKILL'), 15_000);
    }, minutes * 60_000);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      clearTimeout(hard);
      resolve({ status: code, signal, stalled, last });
    });
  });
}

const totals = { pass: 0, fail: 0, skipped: 0 };
const failedTiers = [];
const problems = [];
for (const tier of tiers) {
  let files = find(join('dist', 'test', tier));
  if (filter) files = files.filter((f) => f.includes(filter));
  if (files.length === 0) {
    console.log(`\n== tier ${tier}: no test files`);
    if (strict) {
      problems.push(`tier ${tier} has no test files`);
      totals.fail += 1;
      failedTiers.push(tier);
    }
    continue;
  }
  console.log(`\n== tier ${tier}: ${files.length} file(s)`);
  const events = join(tmpdir(), `banger-tests-${process.pid}-${tier}.jsonl`);
  const concurrency = tier === 'unit' ? 2 : 1;
  const minutes = Number(process.env.BANGER_TIER_TIMEOUT_MIN || TIER_MINUTES[tier] || 30);
  const r = await runTier(
    [
      process.execPath,
      '--test',
      `--test-concurrency=${concurrency}`,
      `--test-timeout=${testTimeout}`,
      '--test-reporter=spec',
      '--test-reporter-destination=stdout',
      `--test-reporter=${reporter}`,
      `--test-reporter-destination=${events}`,
      ...files,
    ],
    { ...process.env, BANGER_TEST_TIER: tier },
    minutes,
  );
  const ev = readEvents(existsSync(events) ? readFileSync(events, 'utf8') : '');
  rmSync(events, { force: true });
  const n = ev.summary ?? { passed: 0, failed: 0, cancelled: 0, skipped: 0, todo: 0 };
  const c = { pass: n.passed, fail: n.failed + n.cancelled, skipped: n.skipped + n.todo };
  if (r.stalled) {
    problems.push(
      `tier ${tier} stalled: killed after its ${minutes} min wall clock (files: ${files.map((f) => f.split('/').pop()).join(', ')}; last test to finish: ${r.last ?? 'none'}; the stall came after it)`,
    );
    c.fail += 1;
  } else if ((r.status !== 0 || !ev.summary) && c.fail === 0) c.fail = 1; // a crash of the runner itself is a failure
  for (const s of ev.skips) {
    const allowed = ALLOWED_SKIPS.some((p) => s.reason.startsWith(p));
    console.log(`   skipped${allowed ? ' (allowed)' : ''}: ${s.name}: ${s.reason}`);
    if (strict && !allowed) {
      problems.push(`tier ${tier}: test skipped outside the allow-list: ${s.name}: ${s.reason}`);
      c.fail += 1;
    }
  }
  for (const t of ev.todos) {
    // node counts a todo as neither passed nor failed, even when it throws; strict mode does not
    // take an unfinished test for a finished one, and never a failing one.
    console.log(`   todo${t.failed ? ' (failing)' : ''}: ${t.name}: ${t.reason}`);
    if (strict) {
      problems.push(`tier ${tier}: ${t.failed ? 'failing ' : ''}todo test: ${t.name}: ${t.reason}`);
      c.fail += 1;
    }
  }
  for (const f of ev.empty) {
    console.log(`   registered no test: ${f}`);
    if (strict) {
      problems.push(`tier ${tier}: ${f} registered no test (a file must register its tests, skipped if need be, so they are counted)`);
      c.fail += 1;
    }
  }
  c.pass -= ev.empty.length; // the file's own entry is not a test
  if (strict && !r.stalled && c.pass + c.fail === 0) {
    problems.push(`tier ${tier} executed zero tests`);
    c.fail += 1;
  }
  console.log(`== tier ${tier}: ${c.pass} passed, ${c.fail} failed, ${c.skipped} skipped`);
  totals.pass += c.pass;
  totals.fail += c.fail;
  totals.skipped += c.skipped;
  if (c.fail) failedTiers.push(tier);
}
if (problems.length) console.log(`\n${strict ? 'strict mode: ' : ''}${problems.map((p) => `\n  ${p}`).join('')}`);
if (strict) console.log('\nstrict mode: skips allowed only for: ' + ALLOWED_SKIPS.join('; '));
console.log(
  `\n${totals.pass} passed, ${totals.fail} failed, ${totals.skipped} skipped${failedTiers.length ? ` (failing tiers: ${failedTiers.join(', ')})` : ''}`,
);
process.exit(totals.fail ? 1 : 0);
