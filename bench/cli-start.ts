/**
 * Benchmark: how long the CLI takes to start, beside the runtime's own empty start, in the same
 * process run with the runs interleaved (so machine load hits both sides alike):
 *   baseline   `node -e 0` with the Node.js that runs banger ($BANGER_NODE or this process's)
 *   banger     `bin/banger --version`, `bin/banger --json --version`, `bin/banger kernel --help`,
 *              `bin/banger vm create --help`
 * `--version` alone is answered by bin/banger before the CLI bundle loads; `--json --version`
 * is the same answer through the bundle (commander, no command group), the start every command
 * pays; the `--help` runs load one group besides (the bundle is split per group,
 * scripts/bundle.mjs; Node's compile cache is on, bin/banger). Prints medians and the ratio to
 * the baseline (issue 20's goal: `--version` at 1.3x or less).
 *
 * Usage: node dist/bench/cli-start.js [--runs 30]
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const runsArg = process.argv.indexOf('--runs');
const RUNS = runsArg > 0 ? Number(process.argv[runsArg + 1]) : 30;
const BANGER = fileURLToPath(new URL('../../bin/banger', import.meta.url));
const NODE = process.env.BANGER_NODE || process.execPath;

const cases: { label: string; argv: string[] }[] = [
  { label: 'node -e 0 (baseline)', argv: [NODE, '-e', '0'] },
  { label: 'banger --version', argv: [BANGER, '--version'] },
  { label: 'banger --json --version', argv: [BANGER, '--json', '--version'] },
  { label: 'banger kernel --help', argv: [BANGER, 'kernel', '--help'] },
  { label: 'banger vm create --help', argv: [BANGER, 'vm', 'create', '--help'] },
];

function once(argv: string[]): number {
  const t = process.hrtime.bigint();
  const r = spawnSync(argv[0], argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, BANGER_NODE: NODE } });
  const ms = Number(process.hrtime.bigint() - t) / 1e6;
  if (r.status !== 0) throw new Error(`${argv.join(' ')} exited ${r.status}: ${r.stderr}`);
  return ms;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
for (const c of cases) once(c.argv); // warm the page cache and the compile cache
const times = cases.map(() => [] as number[]);
for (let i = 0; i < RUNS; i++) cases.forEach((c, j) => times[j].push(once(c.argv)));
const base = median(times[0]);
console.log(`CLI start, ${RUNS} interleaved runs each, median wall-clock ms (${NODE})`);
cases.forEach((c, j) => {
  const m = median(times[j]);
  console.log(`  ${c.label.padEnd(26)} ${m.toFixed(0).padStart(5)} ms  ${(m / base).toFixed(2)}x`);
});
