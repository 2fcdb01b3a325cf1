/**
 * Benchmark: `kernel pull` of a bundle from a loopback HTTP server, beside a baseline of the
 * standard tools doing the same job in the same process run:
 *   curl -o FILE URL && sha256sum FILE && zstd -d -c FILE | tar -x -C DIR
 * Also: a re-pull that finds the bundle in the content store (--force, "used cache").
 *
 * Usage: node dist/bench/kernel-pull.js [--mib 64] [--runs 3]
 * Prints median wall-clock seconds and MiB/s (of the compressed bundle) for each.
 * Traffic stays on 127.0.0.1.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exec } from '../src/core/exec.js';
import { KernelService } from '../src/kernels/service.js';
import { BundleServer, catalogDoc, sha256, tarZstDir, testContext } from '../test/helpers/kernel-bundles.js';

const arg = (name: string, def: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : def;
};
const MIB = arg('mib', 64);
const RUNS = arg('runs', 3);

/** A kernel-like tree: a vmlinux that compresses roughly like a real one (about 3:1), modules. */
function buildTree(dir: string): void {
  mkdirSync(join(dir, 'modules', 'kernel'), { recursive: true });
  const parts: Buffer[] = [];
  for (let n = 0; n < MIB * 1024 * 1024; n += 64 * 1024) {
    const r = randomBytes(16 * 1024);
    parts.push(r, Buffer.alloc(16 * 1024, r[0]), r.subarray(0, 16 * 1024), Buffer.alloc(16 * 1024));
  }
  writeFileSync(join(dir, 'vmlinux'), Buffer.concat(parts).subarray(0, MIB * 1024 * 1024));
  for (let i = 0; i < 200; i++) writeFileSync(join(dir, 'modules', 'kernel', `m${i}.ko`), randomBytes(8 * 1024));
  writeFileSync(join(dir, 'initrd.img'), randomBytes(2 * 1024 * 1024));
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** zstd -d -c FILE | tar -x -C DIR, wired with pipes (no shell). */
function zstdTar(file: string, dir: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const z = spawn('zstd', ['-q', '-d', '-c', '--long=27', file], { stdio: ['ignore', 'pipe', 'inherit'] });
    const t = spawn('tar', ['-x', '-C', dir], { stdio: ['pipe', 'inherit', 'inherit'] });
    z.stdout.pipe(t.stdin);
    let left = 2;
    const done = (code: number | null) => {
      if (code !== 0) reject(new Error(`zstd|tar failed (${code})`));
      else if (--left === 0) resolve();
    };
    z.on('close', done);
    t.on('close', done);
  });
}

async function main(): Promise<void> {
  const src = mkdtempSync(join(tmpdir(), 'banger-bench-src-'));
  buildTree(src);
  const bundle = tarZstDir(src);
  rmSync(src, { recursive: true, force: true });
  const digest = sha256(bundle);
  const srv = await new BundleServer().start();
  srv.set('/bench.tar.zst', bundle);
  srv.set('/catalog.json', JSON.stringify(catalogDoc([{ name: 'bench', path: '/bench.tar.zst', bundle }], srv)));
  const mib = bundle.length / 1024 / 1024;
  console.log(`bundle: ${mib.toFixed(1)} MiB compressed (${MIB} MiB vmlinux + modules + initrd), ${RUNS} runs each, loopback HTTP`);

  const ours: number[] = [];
  const cached: number[] = [];
  const base: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    // banger: download + sha256 while streaming + zstd + tar extraction + install
    const ctx = testContext({ kernelCatalogs: [srv.url('/catalog.json')] });
    try {
      const svc = new KernelService(ctx);
      let t = process.hrtime.bigint();
      const r = await svc.pull('bench');
      ours.push(Number(process.hrtime.bigint() - t) / 1e9);
      if (r.download !== 'downloaded') throw new Error('expected a download');
      t = process.hrtime.bigint();
      const again = await svc.pull('bench', { force: true });
      cached.push(Number(process.hrtime.bigint() - t) / 1e9);
      if (again.download !== 'cached') throw new Error('expected the cache');
    } finally {
      ctx.cleanup();
    }
    // baseline: curl + sha256sum + zstd | tar
    const dir = mkdtempSync(join(tmpdir(), 'banger-bench-base-'));
    try {
      const t = process.hrtime.bigint();
      await exec(['curl', '-sSf', '-o', join(dir, 'b.tar.zst'), srv.url('/bench.tar.zst')]);
      const sum = (await exec(['sha256sum', join(dir, 'b.tar.zst')])).stdout.split(' ')[0];
      if (sum !== digest) throw new Error('baseline digest mismatch');
      mkdirSync(join(dir, 'out'));
      await zstdTar(join(dir, 'b.tar.zst'), join(dir, 'out'));
      base.push(Number(process.hrtime.bigint() - t) / 1e9);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  await srv.stop();
  const row = (label: string, xs: number[]) =>
    console.log(
      `${label.padEnd(44)} ${median(xs).toFixed(2)} s   ${(mib / median(xs)).toFixed(0).padStart(5)} MiB/s   (runs: ${xs.map((x) => x.toFixed(2)).join(', ')})`,
    );
  row('banger kernel pull (download+verify+extract)', ours);
  row('banger kernel pull --force (used cache)', cached);
  row('baseline curl + sha256sum + zstd|tar', base);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
