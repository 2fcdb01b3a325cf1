import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { constants as osConstants } from 'node:os';
import { BangerError, ErrorCode } from './errors.js';
import type { Logger } from './log.js';

/**
 * The one way banger runs a child process: argv arrays only (never a shell string).
 * Injectable: services take an `Exec` so tests can substitute a fake one method at a time.
 */
export interface ExecOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  input?: string | Buffer;
  signal?: AbortSignal;
  /** Resolve instead of throwing on a non-zero exit. */
  allowFailure?: boolean;
  timeoutMs?: number;
  /** Return stdout as a Buffer (binary output). */
  binary?: boolean;
}

export interface ExecResult {
  command: string[];
  exitCode: number;
  stdout: string;
  stdoutBuffer: Buffer;
  stderr: string;
}

export class ExecError extends BangerError {
  readonly command: string[];
  readonly exitCode: number | null;
  readonly stderr: string;
  constructor(command: string[], exitCode: number | null, stderr: string, cause?: unknown) {
    const tail = stderr.trim().split('\n').slice(-5).join('\n');
    super(ErrorCode.Exec, `${command[0]} failed${exitCode === null ? '' : ` (exit ${exitCode})`}${tail ? `: ${tail}` : ''}`, {
      cause,
      details: { command, exitCode },
    });
    this.command = command;
    this.exitCode = exitCode;
    this.stderr = stderr;
  }
}

export type Exec = (argv: string[], opts?: ExecOptions) => Promise<ExecResult>;

/** C locale so we never parse translated tool output. */
export function toolEnv(extra?: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return { ...process.env, LC_ALL: 'C', LANG: 'C', ...extra };
}

export const exec: Exec = (argv, opts = {}) =>
  new Promise((resolve, reject) => {
    if (argv.length === 0) throw new BangerError(ErrorCode.Internal, 'exec: empty argv');
    const spawnOpts: SpawnOptions = { cwd: opts.cwd, env: opts.env ?? toolEnv(), stdio: ['pipe', 'pipe', 'pipe'] };
    const child = spawn(argv[0]!, argv.slice(1), spawnOpts);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timer: NodeJS.Timeout | undefined;
    let killedFor: string | undefined;
    const kill = (why: string) => {
      killedFor = why;
      child.kill('SIGKILL');
    };
    const onAbort = () => kill('cancelled');
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    if (opts.timeoutMs) timer = setTimeout(() => kill(`timed out after ${opts.timeoutMs} ms`), opts.timeoutMs);
    child.stdout!.on('data', (d: Buffer) => out.push(d));
    child.stderr!.on('data', (d: Buffer) => err.push(d));
    child.on('error', (e: NodeJS.ErrnoException) => {
      cleanup();
      if (e.code === 'ENOENT') {
        reject(
          new BangerError(ErrorCode.Exec, `${argv[0]} not found`, { hint: `install ${argv[0]} (see 'banger doctor')`, cause: e, details: { command: argv } }),
        );
      } else reject(new ExecError(argv, null, '', e));
    });
    child.on('close', (code) => {
      cleanup();
      const stdoutBuffer = Buffer.concat(out);
      const stderr = Buffer.concat(err).toString('utf8');
      if (killedFor === 'cancelled') return reject(new BangerError(ErrorCode.Cancelled, `${argv[0]} cancelled`, { details: { command: argv } }));
      if (killedFor) return reject(new BangerError(ErrorCode.Timeout, `${argv[0]} ${killedFor}`, { details: { command: argv } }));
      const result: ExecResult = { command: argv, exitCode: code ?? -1, stdout: opts.binary ? '' : stdoutBuffer.toString('utf8'), stdoutBuffer, stderr };
      if (code !== 0 && !opts.allowFailure) return reject(new ExecError(argv, code, stderr));
      resolve(result);
    });
    function cleanup() {
      if (timer) clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
    }
    child.stdin!.on('error', () => {});
    if (opts.input !== undefined) child.stdin!.end(opts.input);
    else child.stdin!.end();
  });

/**
 * An Exec that logs every command at debug level with its wall time and exit code
 * (`BANGER_LOG_LEVEL=debug`): where the daemon's time goes, without a profiler.
 */
export function tracedExec(inner: Exec, log: Logger): Exec {
  return async (argv, opts) => {
    const t0 = performance.now();
    const done = (exitCode: number | null) => log.debug('exec', { argv: argv.slice(0, 4).join(' '), ms: Math.round(performance.now() - t0), exitCode });
    try {
      const r = await inner(argv, opts);
      done(r.exitCode);
      return r;
    } catch (e) {
      done(e instanceof ExecError ? e.exitCode : null);
      throw e;
    }
  };
}

/** True if `cmd` is on PATH (or is an executable path). */
export async function which(cmd: string): Promise<string | undefined> {
  const { access, constants } = await import('node:fs/promises');
  const { delimiter, join } = await import('node:path');
  const dirs = cmd.includes('/') ? [''] : (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(delimiter).concat(['/usr/sbin', '/sbin']);
  for (const d of dirs) {
    const p = d ? join(d, cmd) : cmd;
    try {
      await access(p, constants.X_OK);
      return p;
    } catch {
      /* next */
    }
  }
  return undefined;
}

/**
 * A child with piped stdio for streaming (vm cp's local tar): argv only, C locale. The caller
 * owns the streams and waits for 'close'; `exitOf` turns that into the exit code or an error.
 */
export function spawnPiped(argv: string[], opts: { cwd?: string } = {}): ChildProcess {
  if (argv.length === 0) throw new BangerError(ErrorCode.Internal, 'spawnPiped: empty argv');
  return spawn(argv[0]!, argv.slice(1), { cwd: opts.cwd, env: toolEnv(), stdio: ['pipe', 'pipe', 'pipe'] });
}

/** Resolves the child's exit code (128+N for a signal); rejects with E_EXEC when it could not start. */
export function exitOf(child: ChildProcess, argv: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    child.once('error', (e: NodeJS.ErrnoException) =>
      reject(
        new BangerError(ErrorCode.Exec, e.code === 'ENOENT' ? `${argv[0]} not found` : `${argv[0]}: ${e.message}`, { cause: e, details: { command: argv } }),
      ),
    );
    child.once('close', (code, sig) => resolve(code ?? (sig ? 128 + (osConstants.signals[sig] ?? 0) : 255)));
  });
}
