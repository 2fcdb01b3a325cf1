/**
 * Benchmark: prepare once per image, and the lean boot (issue 21), each beside its baseline in
 * the same run, on real guests (QEMU; TCG here):
 *   1. the first-boot install inside a VM (config firstBoot.prepare=false: what every VM of a
 *      bare image paid before) against `image prepare` of the same bare image;
 *   2. `vm create` (to SSH and agent ready) of the bare image once prepared, against the same of
 *      an image that shipped with systemd and sshd (goal: within 1.1x);
 *   3. `vm create --no-wait` of the prepared image → agent answering and → SSH answering,
 *      with the lean boot (config vm.leanBoot, the default) and without (goal: agent ≤ 5 s,
 *      SSH ≤ 6 s under TCG), and `systemd-analyze blame` / `critical-chain` of one guest of each.
 * Medians of --runs (default 5). The guests install from a Debian mirror subset served in a
 * namespace of the benchmark (as test/e2e/headline.test.ts does); traffic stays on 127.0.0.1 and
 * in namespaces the script creates.
 *
 * Usage: node dist/bench/prepare.js [--runs 5] [--skip-install] [--skip-ratio]  (skip parts 1 / 2)
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO, TestDaemon } from '../test/helpers/daemon.js';
import { startDebianMirror } from '../test/helpers/debian-mirror.js';
import { DEBIAN_BARE_INCLUDE, DEBIAN_BARE_REPO, ensureDebianImageInRegistry } from '../test/helpers/debootstrap.js';
import { TestRegistry } from '../test/helpers/registry.js';
import { cleanupAll, createNetns, exposeInNetns, vethPair } from '../test/helpers/netns.js';

const arg = (name: string, def: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : def;
};
const RUNS = arg('runs', 5);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const s = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
const MIRROR_ADDR = '10.202.0.2';
const MIRROR_URL = `http://${MIRROR_ADDR}:8080/debian`;

function must(r: { code: number; stderr: string }, what: string): void {
  if (r.code !== 0) throw new Error(`${what} failed (${r.code}): ${r.stderr.slice(-3000)}`);
}

async function main(): Promise<void> {
  const mirror = await startDebianMirror({ install: true });
  const registry = await TestRegistry.start();
  const bareRef = await ensureDebianImageInRegistry(registry.host, { include: DEBIAN_BARE_INCLUDE, repo: DEBIAN_BARE_REPO });
  const fullRef = await ensureDebianImageInRegistry(registry.host);
  const hostNs = createNetns('bprep');
  const mirrorNs = createNetns('bprepm');
  const exposed = [await exposeInNetns(hostNs, mirror.port), await exposeInNetns(hostNs, registry.port)];
  const config = (o: { prepare: boolean; lean: boolean }) => ({
    vm: { sshTimeoutSeconds: 900, firstBootTimeoutSeconds: 1800, stopTimeoutSeconds: 30, vcpu: 2, memoryMiB: 1024, leanBoot: o.lean },
    firstBoot: { prepare: o.prepare },
  });
  const d = new TestDaemon({ netns: hostNs, env: { BANGER_DEBIAN_MIRROR: mirror.url }, config: config({ prepare: true, lean: true }) });
  let server: ChildProcess | undefined;
  let webRoot = '';
  const restart = async (o: { prepare: boolean; lean: boolean }) => {
    await d.stop();
    writeFileSync(join(d.root, 'config.json'), JSON.stringify(config(o), null, 2));
    await d.start();
  };
  try {
    await d.start();
    must(await d.cli(['kernel', 'pull', 'debian-cloud-amd64'], { timeoutMs: 600_000 }), 'kernel pull');
    must(await d.cli(['image', 'pull', bareRef, '--name', 'bare', '--kernel-ref', 'debian-cloud-amd64'], { timeoutMs: 600_000 }), 'image pull (bare)');
    must(
      await d.cli(['image', 'pull', fullRef, '--name', 'full', '--kernel-ref', 'debian-cloud-amd64'], { timeoutMs: 600_000 }),
      'image pull (systemd + sshd)',
    );
    for (const stop of exposed) stop();
    vethPair(hostNs, 'bmirror0', '10.202.0.1/24', mirrorNs, 'eth0', `${MIRROR_ADDR}/24`);
    webRoot = mkdtempSync(join(tmpdir(), 'banger-bprep-'));
    symlinkSync(mirror.root, join(webRoot, 'debian'));
    let served = '';
    server = spawn('ip', ['netns', 'exec', mirrorNs, process.execPath, join(REPO, 'dist/test/helpers/static-server.js'), webRoot, MIRROR_ADDR, '8080'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    server.stdout!.on('data', (c) => (served += c));
    while (!served.includes('listening')) await new Promise((r) => setTimeout(r, 50));
    console.log(
      `host: ${process.env.BANGER_TEST_KVM ? 'KVM' : 'TCG'}, load average ${loadavg()
        .map((x) => x.toFixed(1))
        .join(' ')} at the start; medians of ${RUNS}`,
    );

    // 1. the install in a VM (before) against image prepare (after)
    if (!process.argv.includes('--skip-install')) {
      await restart({ prepare: false, lean: false });
      const t0 = Date.now();
      const c = await d.cli(['vm', 'create', '--image', 'bare', '--name', 'inst', '--nat', '--package-mirror', MIRROR_URL], { timeoutMs: 3_600_000 });
      must(c, 'vm create with the first-boot install');
      const createMs = Date.now() - t0;
      const log = (await d.cli(['vm', 'logs', 'inst'])).stdout;
      const at = (step: string) => Number(new RegExp(`step ${step}[^\\n]*\\(at ([\\d.]+) s\\)`).exec(log)?.[1]);
      must(await d.cli(['vm', 'rm', '-f', 'inst'], { timeoutMs: 120_000 }), 'vm rm');
      await restart({ prepare: true, lean: true });
      const t1 = Date.now();
      must(await d.cli(['image', 'prepare', 'bare', '--package-mirror', MIRROR_URL], { timeoutMs: 3_600_000 }), 'image prepare');
      const prepareMs = Date.now() - t1;
      console.log(
        `\n1. first-boot install: in a VM (every VM of the image, before) vm create ${s(createMs)} (install ${(at('configure') - at('install')).toFixed(1)} s of guest time); image prepare (once) ${s(prepareMs)}`,
      );
    } else {
      await restart({ prepare: true, lean: true });
      must(await d.cli(['image', 'prepare', 'bare', '--package-mirror', MIRROR_URL], { timeoutMs: 3_600_000 }), 'image prepare');
    }

    // 2. create of the prepared bare image against an image that shipped with systemd + sshd
    const creates: Record<string, number[]> = { bare: [], full: [] };
    for (let i = 0; i < (process.argv.includes('--skip-ratio') ? 0 : RUNS); i++) {
      for (const img of ['bare', 'full']) {
        const t = Date.now();
        const c = await d.cli(['vm', 'create', '--image', img, '--name', `c-${img}-${i}`], { timeoutMs: 900_000 });
        must(c, `vm create ${img}`);
        if (/prepare:/.test(c.stderr)) throw new Error('a create of the prepared image prepared again');
        creates[img]!.push(Date.now() - t);
        must(await d.cli(['vm', 'rm', '-f', `c-${img}-${i}`], { timeoutMs: 120_000 }), 'vm rm');
      }
    }
    const [b, f] = [median(creates.bare!) ?? NaN, median(creates.full!) ?? NaN];
    if (creates.bare!.length)
      console.log(
        `\n2. vm create → SSH and agent ready (lean boot): bare image, prepared ${s(b)}; image shipped with systemd+sshd ${s(f)}; ratio ${(b / f).toFixed(2)}x (goal ≤ 1.10x)`,
      );
    if (creates.bare!.length) console.log(`   runs: bare ${creates.bare!.map(s).join(', ')}; full ${creates.full!.map(s).join(', ')}`);

    // 3. agent and SSH ready, with and without the lean boot
    console.log('\n3. vm create --no-wait of the prepared image → agent answers / SSH answers');
    for (const lean of [false, true]) {
      await restart({ prepare: true, lean });
      const agent: number[] = [];
      const ssh: number[] = [];
      for (let i = 0; i < RUNS; i++) {
        const name = `l${lean ? 1 : 0}-${i}`;
        const t = Date.now();
        must(await d.cli(['vm', 'create', '--image', 'bare', '--name', name, '--no-wait'], { timeoutMs: 300_000 }), 'vm create --no-wait');
        const [a, sh] = await Promise.all([pollAgent(d, name, t), pollSsh(d, name, t)]);
        agent.push(a);
        ssh.push(sh);
        if (i === RUNS - 1) {
          const blame = await d.cli(
            [
              'vm',
              'ssh',
              name,
              '--',
              'systemctl is-system-running --wait >/dev/null; systemd-analyze; systemd-analyze blame --no-pager | head -25; systemd-analyze critical-chain --no-pager',
            ],
            { timeoutMs: 300_000 },
          );
          console.log(`   ${lean ? 'lean' : 'not lean'}: systemd-analyze of ${name}:\n${blame.stdout.replace(/^/gm, '     ')}`);
        }
        must(await d.cli(['vm', 'rm', '-f', name], { timeoutMs: 120_000 }), 'vm rm');
      }
      console.log(
        `   ${lean ? 'lean boot (vm.leanBoot true, the default)' : 'before (vm.leanBoot false)'}: agent ready ${s(median(agent))}, SSH ready ${s(median(ssh))}   (agent ${agent.map(s).join(', ')}; ssh ${ssh.map(s).join(', ')})`,
      );
    }
    console.log(
      `\nload average at the end: ${loadavg()
        .map((x) => x.toFixed(1))
        .join(' ')}`,
    );
  } finally {
    server?.kill('SIGKILL');
    await d.cleanup();
    cleanupAll();
    await registry.stop();
    await mirror.close();
    if (webRoot) rmSync(webRoot, { recursive: true, force: true });
  }
}

/** ms from `t0` until the guest agent answers (`vm ports` goes through it). */
async function pollAgent(d: TestDaemon, name: string, t0: number): Promise<number> {
  const c = await d.client();
  try {
    for (;;) {
      try {
        await c.request('vm.ports', { name });
        return Date.now() - t0;
      } catch {
        if (Date.now() - t0 > 600_000) throw new Error(`${name}: the agent did not answer`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  } finally {
    c.close();
  }
}

/** ms from `t0` until `vm ssh NAME -- true` succeeds (the pinned host key, a real login). */
async function pollSsh(d: TestDaemon, name: string, t0: number): Promise<number> {
  for (;;) {
    const r = await d.cli(['vm', 'ssh', name, '--', 'true'], { timeoutMs: 30_000 });
    if (r.code === 0) return Date.now() - t0;
    if (Date.now() - t0 > 600_000) throw new Error(`${name}: no SSH: ${r.stderr}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
