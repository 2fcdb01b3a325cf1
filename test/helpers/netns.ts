import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { constants as osConstants, tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';

/**
 * Network namespaces for tests. Each name is unique (`bt-<pid>-<rand>`); every namespace
 * created here is deleted by `cleanupAll()` (call it from `after`) AND by a process 'exit'
 * handler, so a crashed test run does not leave namespaces behind.
 */
const created = new Set<string>();
let hooked = false;

/**
 * Once per process: clean up on 'exit', and turn SIGINT/SIGTERM/SIGHUP (Ctrl-C on a benchmark,
 * the runner's timeout) into an exit, which Node does not do by itself (a signal's default
 * action skips 'exit' handlers and leaves namespaces, their QEMUs and forwarders behind).
 */
function hookCleanup(): void {
  if (hooked) return;
  hooked = true;
  process.on('exit', () => cleanupAll());
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => process.exit(128 + osConstants.signals[sig]));
  }
}

function run(argv: string[], opts: { allowFailure?: boolean } = {}): string {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', env: { ...process.env, LC_ALL: 'C' } });
  if (r.status !== 0 && !opts.allowFailure) throw new Error(`${argv.join(' ')} failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}

/** Create a namespace with loopback up. */
export function createNetns(label = 'ns'): string {
  const name = `bt-${label}-${process.pid}-${randomBytes(3).toString('hex')}`.slice(0, 40);
  run(['ip', 'netns', 'add', name]);
  created.add(name);
  hookCleanup();
  nsRun(name, ['ip', 'link', 'set', 'lo', 'up']);
  return name;
}

/** Run a command inside a namespace (argv, no shell); returns stdout, throws on failure. */
export function nsRun(ns: string, argv: string[], opts: { allowFailure?: boolean } = {}): string {
  return run(['ip', 'netns', 'exec', ns, ...argv], opts);
}

/**
 * Connect two namespaces with a veth pair: `aIf` in `a` with `aCidr`, `bIf` in `b` with `bCidr`.
 */
export function vethPair(a: string, aIf: string, aCidr: string, b: string, bIf: string, bCidr: string): void {
  run(['ip', 'link', 'add', aIf, 'netns', a, 'type', 'veth', 'peer', 'name', bIf, 'netns', b]);
  nsRun(a, ['ip', 'addr', 'add', aCidr, 'dev', aIf]);
  nsRun(a, ['ip', 'link', 'set', aIf, 'up']);
  nsRun(b, ['ip', 'addr', 'add', bCidr, 'dev', bIf]);
  nsRun(b, ['ip', 'link', 'set', bIf, 'up']);
}

export function deleteNetns(name: string): void {
  // Kill anything still running inside (QEMU, servers) before deleting the namespace.
  const pids = run(['ip', 'netns', 'pids', name], { allowFailure: true }).split('\n').filter(Boolean);
  for (const p of pids) {
    try {
      process.kill(Number(p), 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  run(['ip', 'netns', 'del', name], { allowFailure: true });
  created.delete(name);
}

export function cleanupAll(): void {
  for (const n of [...created]) deleteNetns(n);
  for (const f of [...forwarders]) stopForwarder(f);
}

interface Forwarder {
  procs: ChildProcess[];
  dir: string;
}
const forwarders = new Set<Forwarder>();

function stopForwarder(f: Forwarder): void {
  for (const p of f.procs) if (p.exitCode === null) p.kill('SIGKILL');
  rmSync(f.dir, { recursive: true, force: true });
  forwarders.delete(f);
}

async function waitFor(what: string, ok: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`test setup stalled: ${what} not ready after ${timeoutMs / 1000} s`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Make a loopback server of this namespace (127.0.0.1:`port`) answer on 127.0.0.1:`port` inside
 * `ns` too, so a daemon in its own namespace reaches the test's registry, mirror or bundle
 * server at the same URL. The bytes go loopback → a Unix socket (a path: no namespace) →
 * loopback, through two socat processes; no route between the namespaces exists. Returns a
 * stop function (also run by cleanupAll()).
 */
export async function exposeInNetns(ns: string, port: number): Promise<() => void> {
  const dir = mkdtempSync(join(tmpdir(), 'banger-fwd-'));
  const sock = join(dir, 's');
  const f: Forwarder = { procs: [], dir };
  forwarders.add(f);
  hookCleanup();
  try {
    f.procs.push(spawn('socat', [`UNIX-LISTEN:${sock},fork,mode=600`, `TCP:127.0.0.1:${port}`], { stdio: 'ignore' }));
    await waitFor(`socat UNIX-LISTEN ${sock}`, () => existsSync(sock));
    f.procs.push(spawn('ip', ['netns', 'exec', ns, 'socat', `TCP-LISTEN:${port},bind=127.0.0.1,fork,reuseaddr`, `UNIX-CONNECT:${sock}`], { stdio: 'ignore' }));
    await waitFor(`127.0.0.1:${port} in namespace ${ns}`, () => nsRun(ns, ['ss', '-Hltn', `sport = :${port}`]).includes(`:${port}`));
  } catch (e) {
    stopForwarder(f);
    throw e;
  }
  return () => stopForwarder(f);
}

/** Links in a namespace, from `ip -j`. */
export function nsLinks(ns: string): { ifname: string; master?: string }[] {
  return JSON.parse(nsRun(ns, ['ip', '-j', 'link', 'show']) || '[]');
}
