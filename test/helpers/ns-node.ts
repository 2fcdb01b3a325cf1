import { type ChildProcess, spawn, spawnSync } from 'node:child_process';

/**
 * Small Node programs run inside a test's network namespaces (egress tests): a server that says
 * `ready`, and a one-shot TCP/UDP probe. Everything stays in namespaces the test created.
 */

/** A long-running Node script in `netns` (added to `procs` for the test's cleanup); resolves once it printed `ready`. */
export async function serveInNetns(procs: ChildProcess[], netns: string, code: string): Promise<ChildProcess & { out: () => string }> {
  const p = spawn('ip', ['netns', 'exec', netns, process.execPath, '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  procs.push(p);
  let buf = '';
  await new Promise<void>((resolve, reject) => {
    p.stdout!.on('data', (b: Buffer) => {
      buf += b.toString();
      if (buf.includes('ready')) resolve();
    });
    p.once('exit', (c) => reject(new Error(`server in ${netns} exited ${c}`)));
  });
  return Object.assign(p, { out: () => buf });
}

/** What a TCP (or UDP) client in `netns` receives from host:port within 3 s; '' when nothing came (dropped). */
export function probeFromNetns(netns: string, host: string, port: number, proto: 'tcp' | 'udp' = 'tcp'): string {
  const code =
    proto === 'tcp'
      ? `const s = require('net').connect(${port}, '${host}'); let b = ''; s.on('data', (d) => (b += d)); s.on('end', () => { process.stdout.write(b); process.exit(0); }); s.on('error', () => process.exit(0)); setTimeout(() => process.exit(0), 3000);`
      : `const u = require('dgram').createSocket('udp4'); u.on('message', (m) => { process.stdout.write(m); process.exit(0); }); u.send('x', ${port}, '${host}'); setTimeout(() => process.exit(0), 3000);`;
  return spawnSync('ip', ['netns', 'exec', netns, process.execPath, '-e', code], { encoding: 'utf8', timeout: 10_000 }).stdout;
}
