import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { RpcClient } from '../../src/rpc/client.js';

/** Repo root (tests run from dist/test/...). */
export const REPO = resolve(new URL('.', import.meta.url).pathname, '..', '..', '..');
export const BANGER = join(REPO, 'bin', 'banger');
export const BANGERD = join(REPO, 'bin', 'bangerd');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface TestDaemonOptions {
  config?: Record<string, unknown>;
  env?: NodeJS.ProcessEnv;
  /**
   * The network namespace the daemon and the CLI run in (test/helpers/netns.ts createNetns):
   * required, so a daemon's bridges, taps, NAT rules and reconcile never act on the host.
   * Servers the test runs on the host's loopback reach it through exposeInNetns().
   */
  netns?: string;
  /** A test that runs only CLI commands needing no daemon (e.g. --help): no netns, and start() refuses. */
  cliOnly?: true;
  root?: string;
  /**
   * Run these executables as they are (e.g. an installed /usr/bin/banger, which picks its own
   * Node.js) instead of the checkout's bin/ under this test's node.
   */
  bin?: { banger: string; bangerd: string };
  /**
   * `ip netns exec` unshares the mount namespace and remounts /sys, which hides /sys/fs/cgroup.
   * A daemon that puts VMMs in cgroups (resource limits, docs/limits.md) needs the host's
   * hierarchies, as an installed bangerd has them: with this, the daemon's mount namespace gets
   * them mounted again (the same hierarchies: a v1 mount of a controller set joins the existing
   * one) before bangerd runs. Its network is still the namespace's alone.
   */
  hostCgroups?: boolean;
}

/**
 * An isolated bangerd: its own BANGER_ROOT (temp dir), socket and config, always inside the
 * network namespace `netns` (the constructor throws without one unless `cliOnly`).
 */
export class TestDaemon {
  readonly root: string;
  readonly env: NodeJS.ProcessEnv;
  proc?: ChildProcess;
  stderr = '';
  private readonly cliOnly: boolean;

  constructor(opts: TestDaemonOptions) {
    if (!opts.netns && !opts.cliOnly) {
      throw new Error(
        'TestDaemon needs { netns } (every daemon under test runs in its own network namespace: createNetns() from test/helpers/netns.ts), or { cliOnly: true } for a test that starts no daemon',
      );
    }
    this.cliOnly = !!opts.cliOnly && !opts.netns;
    this.root = opts.root ?? mkdtempSync(join(tmpdir(), 'banger-test-'));
    this.netns = opts.netns;
    this.hostCgroups = !!opts.hostCgroups;
    this.bangerArgv = opts.bin ? [opts.bin.banger] : [process.execPath, BANGER];
    this.bangerdArgv = opts.bin ? [opts.bin.bangerd] : [process.execPath, BANGERD];
    writeFileSync(join(this.root, 'config.json'), JSON.stringify(opts.config ?? {}, null, 2));
    this.env = { ...process.env, BANGER_ROOT: this.root, BANGER_LOG_LEVEL: 'debug', ...opts.env };
    delete this.env.BANGER_SOCKET;
    delete this.env.BANGER_CONFIG;
  }
  readonly netns?: string;
  private readonly hostCgroups: boolean;
  private readonly bangerArgv: string[];
  private readonly bangerdArgv: string[];

  get socket(): string {
    return join(this.root, 'bangerd.sock');
  }

  private wrap(argv: string[]): string[] {
    return this.netns ? ['ip', 'netns', 'exec', this.netns, ...argv] : argv;
  }

  /** argv that runs the built CLI with `args` in the daemon's namespace (for tests that spawn it themselves). */
  cliArgv(args: string[]): string[] {
    return this.wrap([...this.bangerArgv, ...args]);
  }

  async start(timeoutMs = 15000): Promise<void> {
    if (this.cliOnly) throw new Error('a cliOnly TestDaemon starts no daemon: give it { netns }');
    const argv = this.wrap(this.hostCgroups ? withHostCgroups(this.bangerdArgv) : this.bangerdArgv);
    this.proc = spawn(argv[0]!, argv.slice(1), { env: this.env, stdio: ['ignore', 'ignore', 'pipe'] });
    this.proc.stderr!.on('data', (d) => (this.stderr += d.toString()));
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (exited(this.proc)) throw new Error(`bangerd exited (${this.proc.exitCode ?? this.proc.signalCode}): ${this.stderr}`);
      try {
        (await RpcClient.connect(this.socket, 500)).close();
        return;
      } catch {
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    throw new Error(`bangerd did not start: ${this.stderr}`);
  }

  async client(): Promise<RpcClient> {
    return RpcClient.connect(this.socket);
  }

  /** Graceful stop (SIGTERM) and wait. */
  async stop(): Promise<void> {
    if (!this.proc || exited(this.proc)) return;
    const p = this.proc;
    const done = new Promise((r) => p.once('exit', r));
    p.kill('SIGTERM');
    await Promise.race([done, new Promise((r) => setTimeout(r, 10000))]);
    if (!exited(p)) p.kill('SIGKILL');
  }

  /** SIGKILL, as a crash would. */
  async kill(): Promise<void> {
    if (!this.proc || exited(this.proc)) return;
    const p = this.proc;
    const done = new Promise((r) => p.once('exit', r));
    p.kill('SIGKILL');
    await done;
  }

  /**
   * Run the built CLI against this daemon, in the daemon's namespace (so an autostarted daemon,
   * `vm ssh` and anything the CLI fetches stay there too); resolves with exit code and output.
   * A `timeoutMs` that expires kills the CLI and resolves with code -1 and a stderr line naming it.
   * `hostNs` (benchmarks only: measures the CLI without `ip netns exec`) runs it in this namespace;
   * it still reaches the daemon by the socket's path.
   */
  cli(args: string[], opts: { input?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number; hostNs?: boolean } = {}): Promise<CliResult> {
    const argv = opts.hostNs ? [...this.bangerArgv, ...args] : this.wrap([...this.bangerArgv, ...args]);
    return new Promise((resolve) => {
      const child = spawn(argv[0]!, argv.slice(1), { env: { ...this.env, ...opts.env } });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => (stdout += d));
      child.stderr.on('data', (d) => (stderr += d));
      let stalled = false;
      const t = opts.timeoutMs
        ? setTimeout(() => {
            stalled = true;
            child.kill('SIGKILL');
          }, opts.timeoutMs)
        : undefined;
      child.on('close', (code) => {
        if (t) clearTimeout(t);
        if (stalled) stderr += `\n[test] banger ${args.join(' ')} stalled: killed after ${opts.timeoutMs! / 1000} s\n`;
        resolve({ code: code ?? -1, stdout, stderr });
      });
      child.stdin.end(opts.input ?? '');
    });
  }

  /** Run the CLI and parse its --json output; throws with stderr on failure. */
  async json<T = any>(args: string[], opts: { timeoutMs?: number } = {}): Promise<T> {
    const r = await this.cli(['--json', ...args], opts);
    if (r.code !== 0) throw new Error(`banger ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
    return JSON.parse(r.stdout) as T;
  }

  async cleanup(): Promise<void> {
    await this.stop();
    await this.stopAutostarted();
    rmSync(this.root, { recursive: true, force: true });
  }

  /**
   * As root the CLI starts a daemon itself when none answers (e.g. a command run after `kill()`),
   * which this object did not spawn: stop whatever the root's pid file names, so no test leaks a daemon.
   */
  async stopAutostarted(): Promise<void> {
    let pid: number;
    try {
      pid = Number(readFileSync(join(this.root, 'bangerd.pid'), 'utf8').trim());
    } catch {
      return;
    }
    if (!pid || pid === this.proc?.pid) return;
    const alive = () => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    if (!alive()) return;
    process.kill(pid, 'SIGTERM');
    for (let i = 0; i < 100 && alive(); i++) await new Promise((r) => setTimeout(r, 50));
    if (alive()) process.kill(pid, 'SIGKILL');
  }
}

/** True when running as root (namespaces, taps, nft need it). */
export function isRoot(): boolean {
  return process.getuid?.() === 0;
}

/** Returns the reason a command is missing, or undefined when all exist. */
export function missingTools(...cmds: string[]): string | undefined {
  const path = (process.env.PATH ?? '') + ':/usr/sbin:/sbin';
  const missing = cmds.filter((c) => spawnSync('which', [c], { env: { ...process.env, PATH: path } }).status !== 0);
  return missing.length ? `missing tools: ${missing.join(', ')}` : undefined;
}

/** A child that ended either way: by exit (exitCode) or by a signal (signalCode; exitCode stays null). */
function exited(p: ChildProcess): boolean {
  return p.exitCode !== null || p.signalCode !== null;
}

/**
 * argv that mounts the host's cgroup hierarchies (v2, and the v1 memory/pids/cpu/cpuacct ones)
 * at their usual places inside the current mount namespace, then execs `argv` (a fixed sh
 * program; the mounts are its positional parameters).
 */
function withHostCgroups(argv: string[]): string[] {
  const wanted = new Set(['memory', 'pids', 'cpu', 'cpuacct']);
  const specs = readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .map((l) => l.split(' '))
    .filter((f) => f[2] === 'cgroup2' || (f[2] === 'cgroup' && (f[3] ?? '').split(',').some((o) => wanted.has(o))))
    .flatMap((f) => [f[2]!, f[1]!, f[3]!]);
  const script =
    'mount -t tmpfs -o mode=755 cgroup_root /sys/fs/cgroup || exit 1; ' +
    'while [ "$1" != -- ]; do mkdir -p "$2" && mount -t "$1" -o "$3" "$1" "$2" || exit 1; shift 3; done; shift; exec "$@"';
  return ['sh', '-c', script, 'sh', ...specs, '--', ...argv];
}
