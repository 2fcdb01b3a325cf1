/**
 * Benchmark: warm start (issue 22), beside its baseline in the same run, on real guests (QEMU;
 * TCG here), medians of --runs (default 5):
 *   1. `image warm` once (boot to ready + save), and the warm snapshot's footprint on disk;
 *   2. `vm create` (returns with SSH and the agent ready) cold (`--cold`) against warm (restore +
 *      identity) of the same image and shape (goal: warm ≤ 1.0 s);
 *   3. `vm pause` + `vm resume` round trip, the QEMU's resident memory freed by the pause, and
 *      the paused state's size on disk.
 *   4. `vm fork NAME NEW --count 4` until all four answer exec (goal ≤ 2 s under TCG).
 * The image ships systemd and sshd (no prepare); traffic stays on 127.0.0.1 and in the
 * benchmark's own namespace.
 *
 * Usage: node dist/bench/warm.js [--runs 5] [--skip-create]  (skip part 2)
 */
import { readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { TestDaemon } from '../test/helpers/daemon.js';
import { startDebianMirror } from '../test/helpers/debian-mirror.js';
import { ensureDebianImageInRegistry } from '../test/helpers/debootstrap.js';
import { TestRegistry } from '../test/helpers/registry.js';
import { cleanupAll, createNetns, exposeInNetns } from '../test/helpers/netns.js';

const arg = (name: string, def: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : def;
};
const RUNS = arg('runs', 5);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const s = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;

function must(r: { code: number; stderr: string }, what: string): void {
  if (r.code !== 0) throw new Error(`${what} failed (${r.code}): ${r.stderr.slice(-3000)}`);
}

function rssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}

async function main(): Promise<void> {
  const mirror = await startDebianMirror();
  const registry = await TestRegistry.start();
  const ref = await ensureDebianImageInRegistry(registry.host);
  const ns = createNetns('bwarm');
  const exposed = [await exposeInNetns(ns, mirror.port), await exposeInNetns(ns, registry.port)];
  const d = new TestDaemon({ netns: ns, env: { BANGER_DEBIAN_MIRROR: mirror.url }, config: { vm: { sshTimeoutSeconds: 900, vcpu: 2, memoryMiB: 1024 } } });
  try {
    await d.start();
    must(await d.cli(['kernel', 'pull', 'debian-cloud-amd64'], { timeoutMs: 600_000 }), 'kernel pull');
    must(await d.cli(['image', 'pull', ref, '--name', 'deb', '--kernel-ref', 'debian-cloud-amd64'], { timeoutMs: 600_000 }), 'image pull');
    for (const stop of exposed) stop();
    console.log(
      `host: TCG, load average ${loadavg()
        .map((x) => x.toFixed(1))
        .join(' ')} at the start; medians of ${RUNS}; shape 2 vCPU, 1024 MiB`,
    );

    // 1. warm once
    const t0 = Date.now();
    must(await d.cli(['image', 'warm', 'deb'], { timeoutMs: 900_000 }), 'image warm');
    const warmMs = Date.now() - t0;
    const w = (await d.json(['image', 'show', 'deb'])).warm[0];
    console.log(
      `\n1. image warm: ${s(warmMs)}; snapshot on disk ${mib(w.bytes.allocated)} (state ${mib(w.bytes.state)}, memory file ${mib(w.bytes.memory)} apparent, disk ${mib(w.bytes.disk)})`,
    );

    // 2. cold against warm, interleaved
    const times: Record<'cold' | 'warm', number[]> = { cold: [], warm: [] };
    for (let i = 0; i < (process.argv.includes('--skip-create') ? 0 : RUNS); i++) {
      for (const kind of ['cold', 'warm'] as const) {
        const name = `${kind}${i}`;
        const t = Date.now();
        const c = await d.cli(['vm', 'create', '--image', 'deb', '--name', name, ...(kind === 'cold' ? ['--cold'] : [])], { timeoutMs: 900_000 });
        must(c, `vm create (${kind})`);
        times[kind].push(Date.now() - t);
        if (kind === 'warm' && !/restore/.test(c.stderr)) throw new Error(`a warm create did not restore:\n${c.stderr}`);
        must(await d.cli(['vm', 'exec', name, '--', 'true'], { timeoutMs: 120_000 }), 'vm exec');
        must(await d.cli(['vm', 'rm', '-f', name], { timeoutMs: 120_000 }), 'vm rm');
      }
    }
    if (times.cold.length)
      console.log(
        `\n2. vm create → ready: cold ${s(median(times.cold))}, warm ${s(median(times.warm))} (${(median(times.cold) / median(times.warm)).toFixed(1)}x; goal warm ≤ 1.0 s)`,
      );
    if (times.cold.length) console.log(`   runs: cold ${times.cold.map(s).join(', ')}; warm ${times.warm.map(s).join(', ')}`);

    // 3. pause / resume
    must(await d.cli(['vm', 'create', '--image', 'deb', '--name', 'p'], { timeoutMs: 900_000 }), 'vm create p');
    must(await d.cli(['vm', 'exec', 'p', '--', 'sh', '-c', 'head -c 200000000 /dev/urandom > /dev/shm/fill'], { timeoutMs: 300_000 }), 'fill memory');
    const pauses: number[] = [];
    const resumes: number[] = [];
    let freed = 0;
    let stateBytes = 0;
    for (let i = 0; i < RUNS; i++) {
      const pid = (await d.json(['vm', 'show', 'p'])).pid as number;
      const rss = rssBytes(pid);
      let t = Date.now();
      must(await d.cli(['vm', 'pause', 'p'], { timeoutMs: 300_000 }), 'vm pause');
      pauses.push(Date.now() - t);
      const shown = await d.json(['vm', 'show', 'p']);
      stateBytes = shown.paused.bytes;
      freed = rss;
      t = Date.now();
      must(await d.cli(['vm', 'resume', 'p'], { timeoutMs: 300_000 }), 'vm resume');
      resumes.push(Date.now() - t);
    }
    console.log(
      `\n3. vm pause ${s(median(pauses))} + vm resume ${s(median(resumes))} = ${s(median(pauses) + median(resumes))} round trip; QEMU RSS freed by the pause ${mib(freed)}; paused state ${mib(stateBytes)} on disk (guest with 200 MB in /dev/shm)`,
    );
    console.log(`   runs: pause ${pauses.map(s).join(', ')}; resume ${resumes.map(s).join(', ')}`);

    // 4. fork --count 4 of the running VM p, until all four answer exec
    const forks: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const t = Date.now();
      must(await d.cli(['vm', 'fork', 'p', `f${i}`, '--count', '4'], { timeoutMs: 900_000 }), 'vm fork');
      await Promise.all([1, 2, 3, 4].map(async (k) => must(await d.cli(['vm', 'exec', `f${i}-${k}`, '--', 'true'], { timeoutMs: 120_000 }), 'vm exec fork')));
      forks.push(Date.now() - t);
      must(await d.cli(['vm', 'rm', '-f', ...[1, 2, 3, 4].map((k) => `f${i}-${k}`)], { timeoutMs: 300_000 }), 'vm rm forks');
    }
    console.log(`\n4. vm fork --count 4 → all four answer exec: ${s(median(forks))} (goal ≤ 2 s); runs: ${forks.map(s).join(', ')}`);
  } catch (e) {
    const log = readFileSync(`${d.root}/logs/bangerd.log`, 'utf8').slice(-6000);
    console.error(`vm list:\n${(await d.cli(['vm', 'list'])).stdout}\ndaemon log tail:\n${log}`);
    throw e;
  } finally {
    await d.cleanup();
    cleanupAll();
    await registry.stop();
    await mirror.close();
  }
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
