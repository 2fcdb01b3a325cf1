/**
 * Benchmark: the Firecracker driver's raw root disk (`rawRootCopy`): a reflink where the
 * filesystem of the state root supports it, else a sparse copy; reported separately for a
 * 1 GiB and an 8 GiB image (mostly holes, 64 MiB of data) and a 512 MiB fully written image.
 * Usage: node dist/bench/firecracker-disk.js [--dir DIR] [--runs 3]  (DIR: a directory on the
 * filesystem to measure, default the OS temp dir). No network, no root needed.
 */
import { closeSync, mkdtempSync, openSync, rmSync, truncateSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { exec } from '../src/core/exec.js';
import { rawRootCopy } from '../src/vms/drivers/firecracker/disk.js';

const argv = process.argv;
const opt = (n: string) => (argv.indexOf(`--${n}`) > 0 ? argv[argv.indexOf(`--${n}`) + 1] : undefined);
const RUNS = Number(opt('runs') ?? 3);
const dir = mkdtempSync(join(opt('dir') ?? tmpdir(), 'banger-bench-fcdisk-'));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

function image(name: string, size: number, dataBytes: number): string {
  const p = join(dir, name);
  const fd = openSync(p, 'w');
  const chunk = randomBytes(1 << 20);
  for (let off = 0; off < dataBytes; off += chunk.length) writeSync(fd, chunk, 0, chunk.length, off);
  closeSync(fd);
  truncateSync(p, size);
  return p;
}

try {
  const cases: [string, string][] = [
    ['1 GiB (64 MiB data)', image('1g', 1 << 30, 64 << 20)],
    ['8 GiB (64 MiB data)', image('8g', 8 * 2 ** 30, 64 << 20)],
    ['512 MiB (all data)', image('full', 512 << 20, 512 << 20)],
  ];
  for (const [label, base] of cases) {
    for (const forceSparse of [false, true]) {
      const times: number[] = [];
      let method = '';
      for (let i = 0; i < RUNS; i++) {
        const t = join(dir, `copy-${i}`);
        const t0 = performance.now();
        method = await rawRootCopy(exec, base, t, { forceSparse });
        times.push(performance.now() - t0);
        rmSync(t);
      }
      console.log(
        `${label.padEnd(22)} ${forceSparse ? 'forced sparse' : 'default      '} → ${method.padEnd(7)} median ${median(times).toFixed(1)} ms (${RUNS} runs)`,
      );
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
