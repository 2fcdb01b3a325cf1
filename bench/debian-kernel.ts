/**
 * Benchmark: obtaining the Debian cloud kernel + a busybox initramfs from a loopback Debian
 * mirror (real signed InRelease, Packages and .debs; see test/helpers/debian-mirror.ts), beside
 * a baseline of the standard tools doing the same verified job in the same run:
 *   curl InRelease && gpgv && curl Packages && sha256sum && curl *.deb && sha256sum &&
 *   dpkg-deb -x (kernel, busybox) && lz4 -dc (vmlinux) && find | cpio -o -H newc | gzip
 * (each command spawned with argv; data piped between them by this script). The baseline is
 * handed the .deb file names, so it skips resolving packages from the index: a lower bound.
 * Also: banger with the .debs already in the content store ("used-cache").
 *
 * Usage (root, apt lists present): node dist/bench/debian-kernel.js [--runs 3]
 * Prints the median wall-clock seconds of each. Traffic stays on 127.0.0.1.
 */
import { cpSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { ContentStore } from '../src/core/content-store.js';
import { exec } from '../src/core/exec.js';
import { nullLogger } from '../src/core/log.js';
import { fetchDebianKernel, type DebianKernelEntry } from '../src/kernels/debian/fetch.js';
import { INIT_SCRIPT } from '../src/kernels/debian/initramfs.js';
import { GUEST_MODULES, resolveModules } from '../src/kernels/debian/modules.js';
import { locatePayload } from '../src/kernels/debian/vmlinux.js';
import { debianMirrorUnavailable, startDebianMirror, type DebianMirror } from '../test/helpers/debian-mirror.js';

const RUNS = (() => {
  const i = process.argv.indexOf('--runs');
  return i > 0 ? Number(process.argv[i + 1]) : 3;
})();
const KEYRING = '/usr/share/keyrings/debian-archive-keyring.gpg';
const entry: DebianKernelEntry = {
  name: 'debian-cloud-amd64',
  kind: 'debian',
  distro: 'debian',
  arch: 'x86_64',
  package: 'linux-image-cloud-amd64',
  suite: 'bookworm',
  description: '',
};

/** Run argv asynchronously (the mirror is served from this process's event loop). */
async function run(argv: string[], opts: { input?: Buffer; cwd?: string } = {}): Promise<Buffer> {
  const r = await exec(argv, { input: opts.input, cwd: opts.cwd, binary: true });
  return r.stdoutBuffer;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function ours(m: DebianMirror, work: string, blobs?: string): Promise<number> {
  const out = join(work, 'out');
  const tmp = join(work, 'tmp');
  mkdirSync(out, { recursive: true });
  mkdirSync(tmp, { recursive: true });
  const t0 = performance.now();
  await fetchDebianKernel({
    entry,
    mirror: m.url,
    keyring: KEYRING,
    outDir: out,
    tmpDir: tmp,
    exec,
    log: nullLogger,
    store: blobs ? ContentStore.at(blobs) : undefined,
  });
  return (performance.now() - t0) / 1000;
}

async function baseline(m: DebianMirror, work: string): Promise<number> {
  mkdirSync(work, { recursive: true });
  const t0 = performance.now();
  await run(['curl', '-sf', '-o', join(work, 'InRelease'), `${m.url}/dists/bookworm/InRelease`]);
  await run(['gpgv', '--keyring', KEYRING, join(work, 'InRelease')]);
  await run(['curl', '-sf', '-o', join(work, 'Packages'), `${m.url}/dists/bookworm/main/binary-amd64/Packages`]);
  await run(['sha256sum', join(work, 'Packages')]);
  for (const p of [m.packages.kernel, m.packages.busybox]) {
    await run(['curl', '-sf', '-o', join(work, `${p.package}.deb`), `${m.url}/${p.filename}`]);
    await run(['sha256sum', join(work, `${p.package}.deb`)]);
  }
  await run(['dpkg-deb', '-x', join(work, `${m.packages.kernel.package}.deb`), join(work, 'k')]);
  await run(['dpkg-deb', '-x', join(work, `${m.packages.busybox.package}.deb`), join(work, 'b')]);
  const boot = join(work, 'k', 'boot');
  const vmlinuz = join(boot, readdirSync(boot).find((n) => n.startsWith('vmlinuz-'))!);
  const release = vmlinuz.replace(/^.*vmlinuz-/, '');
  const p = locatePayload(readFileSync(vmlinuz), vmlinuz);
  writeFileSync(join(work, 'vmlinux'), await run(p.format.argv, { input: p.data }));
  // initramfs tree: busybox, /init, the same modules; then find | cpio | gzip
  const tree = join(work, 'tree');
  mkdirSync(join(tree, 'bin'), { recursive: true });
  cpSync(join(work, 'b', 'bin', 'busybox'), join(tree, 'bin', 'busybox'));
  cpSync(INIT_SCRIPT, join(tree, 'init'));
  const modDir = join(work, 'k', 'lib', 'modules', release);
  const { modules } = await resolveModules(modDir, GUEST_MODULES, exec);
  for (const mod of modules) {
    const dst = join(tree, 'lib', 'modules', release, mod.rel);
    mkdirSync(dirname(dst), { recursive: true });
    cpSync(join(modDir, mod.rel), dst);
  }
  const list = await run(['find', '.'], { cwd: tree });
  const cpio = await run(['cpio', '-o', '-H', 'newc', '--quiet'], { input: list, cwd: tree });
  writeFileSync(join(work, 'initrd.img'), await run(['gzip', '-6', '-c'], { input: cpio }));
  return (performance.now() - t0) / 1000;
}

async function main(): Promise<void> {
  const why = debianMirrorUnavailable();
  if (why) {
    console.error(`debian-kernel bench: cannot run: ${why}`);
    process.exit(2);
  }
  const m = await startDebianMirror();
  const root = mkdtempSync(join(tmpdir(), 'banger-bench-deb-'));
  const blobs = join(root, 'blobs');
  try {
    const t = { ours: [] as number[], cached: [] as number[], base: [] as number[] };
    await ours(m, join(root, 'warm'), blobs); // fill the content store once
    for (let i = 0; i < RUNS; i++) {
      t.base.push(await baseline(m, join(root, `base${i}`)));
      t.ours.push(await ours(m, join(root, `ours${i}`)));
      t.cached.push(await ours(m, join(root, `cached${i}`), blobs));
      for (const d of [`base${i}`, `ours${i}`, `cached${i}`]) rmSync(join(root, d), { recursive: true, force: true });
    }
    const f = (x: number) => `${x.toFixed(2)} s`;
    console.log(`debian kernel + initramfs from a loopback mirror (median of ${RUNS}):`);
    console.log(`  baseline curl+gpgv+sha256sum+dpkg-deb+lz4+cpio+gzip  ${f(median(t.base))}`);
    console.log(`  banger fetchDebianKernel (download .debs)            ${f(median(t.ours))}`);
    console.log(`  banger fetchDebianKernel (.debs in content store)    ${f(median(t.cached))}`);
  } finally {
    await m.close();
    rmSync(root, { recursive: true, force: true });
  }
}

await main();
