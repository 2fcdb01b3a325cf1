/**
 * Benchmark: `image pull` of the debootstrap Debian bookworm image (one gzip layer, ~170 MB
 * uncompressed) from a local docker-registry on 127.0.0.1, beside a baseline of standard
 * tools doing the same job in the same run:
 *   skopeo copy docker://… oci:DIR  →  tar -x --xattrs --xattrs-include='*' (each layer)
 *   →  mkfs.ext4 -d DIR
 * Cold: empty content store. Warm: layers cached, new image name (re-uses the identical
 * build's ext4); also printed: warm with a forced rebuild from the cached layers.
 *
 * Usage: node dist/bench/image-pull.js [--runs 2]
 * Prints wall-clock seconds (median) and the ratios to the baseline (targets: cold ≤ 0.8x,
 * warm ≤ 0.3x). Needs root, docker-registry, skopeo, debootstrap (first run only).
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureDebianImageInRegistry } from '../test/helpers/debootstrap.js';
import { imageService } from '../test/helpers/image-context.js';
import { TestRegistry } from '../test/helpers/registry.js';

const arg = (name: string, def: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : def;
};
const RUNS = arg('runs', 2);

function run(argv: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, LC_ALL: 'C' } });
    let err = '';
    p.stderr!.on('data', (d) => (err += d));
    p.on('error', reject);
    p.on('close', (c) => (c === 0 ? resolve() : reject(new Error(`${argv.join(' ')} (${c}): ${err}`))));
  });
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function time(fn: () => Promise<unknown>): Promise<number> {
  const t = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t) / 1e9;
}

/** skopeo copy → tar -x per layer → mkfs.ext4 -d, sized like banger does (1.5x, ≥ 1 GiB). */
async function baseline(ref: string, work: string): Promise<void> {
  const oci = join(work, 'oci');
  const root = join(work, 'root');
  mkdirSync(root);
  await run(['skopeo', 'copy', '--quiet', '--src-tls-verify=false', `docker://${ref}`, `oci:${oci}:img`]);
  const index = JSON.parse(readFileSync(join(oci, 'index.json'), 'utf8'));
  const manifest = JSON.parse(readFileSync(join(oci, 'blobs', 'sha256', index.manifests[0].digest.slice(7)), 'utf8'));
  for (const l of manifest.layers) {
    await run(['tar', '-x', '--xattrs', '--xattrs-include=*', '--numeric-owner', '-p', '-f', join(oci, 'blobs', 'sha256', l.digest.slice(7)), '-C', root]);
  }
  await run([
    'mkfs.ext4',
    '-q',
    '-b',
    '4096',
    '-O',
    '^orphan_file',
    '-L',
    'rootfs',
    '-E',
    'root_owner=0:0',
    '-d',
    root,
    join(work, 'rootfs.ext4'),
    `${1024 * 1024}k`,
  ]);
}

async function main(): Promise<void> {
  const reg = await TestRegistry.start();
  try {
    process.stderr.write('preparing the Debian image (debootstrap on first use)…\n');
    const ref = await ensureDebianImageInRegistry(reg.host);
    const base: number[] = [];
    const cold: number[] = [];
    const warm: number[] = [];
    const warmRebuild: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const work = mkdtempSync(join(tmpdir(), 'banger-bench-base-'));
      try {
        base.push(await time(() => baseline(ref, work)));
      } finally {
        rmSync(work, { recursive: true, force: true });
      }
      const { svc, cleanup } = imageService();
      try {
        cold.push(await time(() => svc.pull({ ref, name: 'cold' })));
        await svc.settled();
        warmRebuild.push(await time(() => svc.pull({ ref, name: 'warm-rebuilt', reuse: false })));
        warm.push(await time(() => svc.pull({ ref, name: 'warm' })));
        await svc.settled();
      } finally {
        cleanup();
      }
      process.stderr.write(
        `run ${i + 1}/${RUNS}: baseline ${base[i]!.toFixed(2)}s, cold ${cold[i]!.toFixed(2)}s, warm ${warm[i]!.toFixed(2)}s (rebuilt from cached layers ${warmRebuild[i]!.toFixed(2)}s)\n`,
      );
    }
    const b = median(base);
    const c = median(cold);
    const w = median(warm);
    const line = (name: string, s: number, target?: number) =>
      `${name.padEnd(44)} ${s.toFixed(2).padStart(7)} s${target === undefined ? '' : `   ${(s / b).toFixed(2)}x baseline (target ≤ ${target}x) ${s / b <= target ? 'MET' : 'NOT MET'}`}`;
    console.log(`image pull benchmark: ${ref} (median of ${RUNS})`);
    console.log(line('baseline: skopeo copy + tar -x + mkfs.ext4 -d', b));
    console.log(line('banger image pull, cold (empty store)', c, 0.8));
    console.log(line('banger image pull, warm (layers cached)', w, 0.3));
    console.log(line('  same, forced rebuild from cached layers', median(warmRebuild)));
    console.log('warm re-uses the ext4 of the identical cold build (hard link, build key = manifest digest + platform + size + guest files);');
    console.log('the forced rebuild shows the cost without that (extract cached layers + inject + mkfs + e2fsck).');
  } finally {
    await reg.stop();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
