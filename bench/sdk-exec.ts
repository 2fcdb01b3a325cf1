/**
 * Benchmark: 100 × `vm.exec('true')` through the SDK (one process, one connection) against its
 * baseline, 100 × `banger vm exec NAME -- true` processes, in one run; and the SDK's per-call
 * overhead against a raw JSON-RPC round trip on the daemon's socket (`daemon.status` both ways).
 *
 * Setup: the daemon's real vm.* handlers and RPC server in front of the real C guest agent on a
 * Unix socket (test/helpers/agent-daemon.ts), i.e. everything but the guest and its transport
 * (virtio-serial), which both sides share and would add equally. Say so when quoting it.
 *
 * Usage: node dist/bench/sdk-exec.js [--runs 100]
 */
import { spawn } from 'node:child_process';
import { connect } from 'node:net';
import { join } from 'node:path';
import { Banger } from '../src/sdk/index.js';
import { agentMissing, startAgentDaemon } from '../test/helpers/agent-daemon.js';
import { BANGER } from '../test/helpers/daemon.js';

const i = process.argv.indexOf('--runs');
const RUNS = i > 0 ? Number(process.argv[i + 1]) : 100;

const stats = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  return { median: s[Math.floor(s.length / 2)]!, p90: s[Math.floor(s.length * 0.9)]!, mean, total: xs.reduce((a, b) => a + b, 0) };
};
const fmt = (ms: number) => (ms < 1 ? `${(ms * 1000).toFixed(0)} µs` : `${ms.toFixed(2)} ms`);

async function timeEach(n: number, fn: () => Promise<unknown>): Promise<number[]> {
  const out: number[] = [];
  for (let k = 0; k < n; k++) {
    const t0 = performance.now();
    await fn();
    out.push(performance.now() - t0);
  }
  return out;
}

function cli(env: NodeJS.ProcessEnv, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, [BANGER, ...args], { env, stdio: 'ignore' });
    c.on('error', reject);
    c.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`banger ${args.join(' ')} exited ${code}`))));
  });
}

/** One raw JSON-RPC connection: write a request line, wait for the reply line. */
async function rawClient(socket: string): Promise<{ status(): Promise<void>; close(): void }> {
  const s = connect(socket);
  await new Promise((r) => s.once('connect', r));
  let buf = '';
  let waiter: (() => void) | undefined;
  s.on('data', (d) => {
    buf += d;
    const nl = buf.indexOf('\n');
    if (nl >= 0) {
      buf = buf.slice(nl + 1);
      waiter?.();
    }
  });
  let id = 0;
  return {
    status: () =>
      new Promise<void>((r) => {
        waiter = r;
        s.write(JSON.stringify({ jsonrpc: '2.0', id: ++id, method: 'daemon.status', params: {} }) + '\n');
      }),
    close: () => s.destroy(),
  };
}

async function main(): Promise<void> {
  if (agentMissing) throw new Error(agentMissing);
  const d = await startAgentDaemon();
  try {
    const env = { ...process.env, BANGER_SOCKET: d.socket, BANGER_ROOT: join(d.dir, 'root') };
    const b = await Banger.connect({ socket: d.socket, autostart: false });
    const vm = await b.vms.get('box');
    // warm both paths once
    if ((await vm.exec('true')).exitCode !== 0) throw new Error('exec failed');
    await cli(env, ['vm', 'exec', 'box', '--', 'true']);

    const sdk = stats(await timeEach(RUNS, () => vm.exec('true')));
    const proc = stats(await timeEach(RUNS, () => cli(env, ['vm', 'exec', 'box', '--', 'true'])));
    const raw = await rawClient(d.socket);
    await raw.status();
    const rawRt = stats(await timeEach(RUNS, () => raw.status()));
    const sdkRt = stats(await timeEach(RUNS, () => b.status()));
    raw.close();
    b.close();

    console.log(`setup: daemon vm.* handlers + RPC server + the real C agent on a Unix socket (no guest); ${RUNS} calls each, sequential`);
    console.log('');
    console.log('| path | median | p90 | mean | total |');
    console.log('|---|---|---|---|---|');
    const row = (name: string, s: ReturnType<typeof stats>) => console.log(`| ${name} | ${fmt(s.median)} | ${fmt(s.p90)} | ${fmt(s.mean)} | ${fmt(s.total)} |`);
    row("SDK vm.exec('true')", sdk);
    row('banger vm exec box -- true (process)', proc);
    row('raw JSON-RPC daemon.status round trip', rawRt);
    row('SDK b.status() (same call)', sdkRt);
    console.log('');
    console.log(`SDK exec vs CLI process: ${(proc.mean / sdk.mean).toFixed(1)}x faster per call (goal: >= 5x)`);
    console.log(`SDK per-call overhead over a raw socket round trip: ${fmt(sdkRt.mean - rawRt.mean)} (mean), ${fmt(sdkRt.median - rawRt.median)} (median)`);
  } finally {
    await d.close();
  }
}

await main();
