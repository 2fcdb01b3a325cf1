/**
 * Benchmark: `banger vm exec NAME -- true` (guest agent over virtio-serial) against
 * `banger vm ssh NAME -- true` (OpenSSH to the guest's bridge address), and `banger vm cp` of a
 * 200 MiB file into the guest against `scp` of the same file to the same guest, all in one run
 * on one Debian guest (systemd + sshd) under QEMU (TCG here). Goal: exec ≤ 1/3 of ssh.
 *
 * Usage: node dist/bench/vm-exec.js [--runs 5]
 * Needs root, qemu, the Debian test mirror cache and debootstrap (test/helpers). Traffic stays on
 * 127.0.0.1 and in the namespace the script creates.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TestDaemon } from '../test/helpers/daemon.js';
import { startDebianMirror } from '../test/helpers/debian-mirror.js';
import { ensureDebianImageInRegistry } from '../test/helpers/debootstrap.js';
import { cleanupAll, createNetns, exposeInNetns, nsRun } from '../test/helpers/netns.js';
import { TestRegistry } from '../test/helpers/registry.js';
import { type SshPaths, sshOptions } from '../src/vms/ssh.js';

const i = process.argv.indexOf('--runs');
const RUNS = i > 0 ? Number(process.argv[i + 1]) : 5;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

function must(r: { code: number; stderr: string }, what: string): void {
  if (r.code !== 0) throw new Error(`${what} failed (${r.code}): ${r.stderr}`);
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'banger-bench-exec-'));
  const mirror = await startDebianMirror();
  const registry = await TestRegistry.start();
  const ns = createNetns('benchexec');
  const d = new TestDaemon({ netns: ns, env: { BANGER_DEBIAN_MIRROR: mirror.url }, config: { vm: { sshTimeoutSeconds: 600, vcpu: 2, memoryMiB: 512 } } });
  try {
    const ref = await ensureDebianImageInRegistry(registry.host);
    const exposed = [await exposeInNetns(ns, mirror.port), await exposeInNetns(ns, registry.port)];
    await d.start();
    must(await d.cli(['kernel', 'pull', 'debian-cloud-amd64'], { timeoutMs: 600_000 }), 'kernel pull');
    must(await d.cli(['image', 'pull', ref, '--name', 'deb', '--kernel-ref', 'debian-cloud-amd64'], { timeoutMs: 600_000 }), 'image pull');
    for (const stop of exposed) stop();
    must(await d.cli(['vm', 'create', '--image', 'deb', '--name', 'bx'], { timeoutMs: 900_000 }), 'vm create');
    // Warm both paths once (agent connection, ssh host key / ControlMaster-free first connect).
    must(await d.cli(['vm', 'exec', 'bx', '--', 'true']), 'vm exec');
    must(await d.cli(['vm', 'ssh', 'bx', '--', 'true']), 'vm ssh');
    const exec: number[] = [];
    const ssh: number[] = [];
    for (let r = 0; r < RUNS; r++) {
      exec.push(await timed(async () => must(await d.cli(['vm', 'exec', 'bx', '--', 'true']), 'vm exec')));
      ssh.push(await timed(async () => must(await d.cli(['vm', 'ssh', 'bx', '--', 'true']), 'vm ssh')));
    }
    const file = join(work, 'big');
    const big = Buffer.alloc(200 << 20);
    for (let o = 0; o < big.length; o += 4096) big.writeUInt32LE((o * 2654435761) >>> 0, o);
    writeFileSync(file, big);
    const cp = await timed(async () => must(await d.cli(['vm', 'cp', file, 'bx:/root/big-cp'], { timeoutMs: 1_800_000 }), 'vm cp'));
    const info = await d.json(['vm', 'show', 'bx']);
    const key = join(d.root, 'ssh', 'id_ed25519');
    const scp = await timed(async () => {
      nsRun(ns, [
        'scp',
        '-q',
        // banger's own pinned options: the baseline differs only in the transport (scp vs the agent)
        ...sshOptions({ key, knownHosts: join(d.root, 'ssh', 'known_hosts') } as SshPaths),
        file,
        `root@${info.ip}:/root/big-scp`,
      ]);
    });
    const sums = await d.cli(['vm', 'exec', 'bx', '--', 'sha256sum', '/root/big-cp', '/root/big-scp']);
    const [a, b] = sums.stdout
      .trim()
      .split('\n')
      .map((l) => l.split(/\s+/)[0]);
    if (!a || a !== b) throw new Error(`copies differ: ${sums.stdout}`);
    const mx = median(exec);
    const ms = median(ssh);
    console.log(`vm exec -- true : median ${mx.toFixed(0)} ms over ${RUNS} (all: ${exec.map((x) => x.toFixed(0)).join(', ')})`);
    console.log(`vm ssh -- true  : median ${ms.toFixed(0)} ms over ${RUNS} (all: ${ssh.map((x) => x.toFixed(0)).join(', ')})`);
    console.log(`exec / ssh      : ${(mx / ms).toFixed(2)} (goal ≤ 0.33)`);
    console.log(`vm cp 200 MiB   : ${(cp / 1000).toFixed(1)} s (${(200 / (cp / 1000)).toFixed(1)} MiB/s)`);
    console.log(`scp 200 MiB     : ${(scp / 1000).toFixed(1)} s (${(200 / (scp / 1000)).toFixed(1)} MiB/s)`);
  } finally {
    await d.cleanup();
    cleanupAll();
    await registry.stop();
    await mirror.close();
    rmSync(d.root, { recursive: true, force: true });
    rmSync(work, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
