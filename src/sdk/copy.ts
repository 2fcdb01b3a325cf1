import { lstat, mkdtemp, rename, rm } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { BangerError, ErrorCode } from '../core/errors.js';
import { exitOf, spawnPiped } from '../core/exec.js';
import type { RpcClient } from '../rpc/client.js';
import { StreamCall } from '../rpc/stream.js';
import { checkSignal } from './operation.js';

/*
 * The SDK's copies: tar streams through the guest agent (`vm.cpIn` / `vm.cpOut`), with GNU tar
 * on this host. Unlike `banger vm cp` (docker cp's rules), the SDK copies to exactly the path
 * given. TODO(issue 23): once the CLI's hardened cp-out path lands in rpc/, copyOut goes
 * through it instead of extracting with tar's own protections here.
 */

const trimSlash = (p: string) => (p.length > 1 ? p.replace(/\/+$/, '') : p);
/** Escapes a name for a GNU tar --transform expression `s,RE,REPL,S`. */
const reEsc = (s: string) => s.replace(/[\\.[\]*^$,]/g, (c) => `\\${c}`);
const replEsc = (s: string) => s.replace(/[\\&,]/g, (c) => `\\${c}`);

function checkName(n: string, what: string): void {
  if (n.includes('\n') || n === '' || n === '.' || n === '..' || n === '/') throw new BangerError(ErrorCode.Invalid, `${what} '${n}' cannot be copied by name`);
}

/** Runs local tar while `feed` moves the stream; both must succeed. */
async function withTar(
  argv: string[],
  signal: AbortSignal | undefined,
  feed: (child: ChildProcess, setCall: (c: StreamCall) => void) => Promise<number>,
): Promise<void> {
  checkSignal(signal);
  const child = spawnPiped(argv);
  const err: Buffer[] = [];
  child.stderr!.on('data', (d: Buffer) => err.length < 64 && err.push(d));
  child.stdin!.on('error', () => {});
  const exited = exitOf(child, argv);
  let call: StreamCall | undefined;
  const onAbort = () => {
    call?.close();
    child.kill('SIGKILL');
  };
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    const guest = await feed(child, (c) => (call = c)).catch(async (e) => {
      child.kill('SIGKILL');
      await exited.catch(() => {});
      throw e;
    });
    const code = await exited.catch((e) => {
      if (signal?.aborted) throw new BangerError(ErrorCode.Cancelled, 'copy cancelled', { cause: signal.reason });
      throw e;
    });
    if (signal?.aborted) throw new BangerError(ErrorCode.Cancelled, 'copy cancelled', { cause: signal.reason });
    if (code !== 0)
      throw new BangerError(ErrorCode.Exec, `local tar failed (exit ${code}): ${Buffer.concat(err).toString().trim().split('\n').slice(-3).join('; ')}`);
    if (guest !== 0) throw new BangerError(ErrorCode.Exec, `tar in the guest failed (exit ${guest})`);
  } catch (e) {
    if (signal?.aborted && !(e instanceof BangerError && e.code === ErrorCode.Cancelled))
      throw new BangerError(ErrorCode.Cancelled, 'copy cancelled', { cause: e });
    throw e;
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}

export async function copyIn(rpc: RpcClient, vm: string, hostPath: string, guestPath: string, signal?: AbortSignal): Promise<void> {
  const src = resolve(hostPath);
  if (!(await lstat(src).catch(() => undefined))) throw new BangerError(ErrorCode.NotFound, `${hostPath}: no such file or directory`);
  const dst = trimSlash(guestPath);
  const into = dirname(dst);
  const parent = await rpc.request('vm.stat', { name: vm, path: into }, { signal });
  if (!parent.exists || parent.type !== 'dir') throw new BangerError(ErrorCode.NotFound, `${vm}:${into} is not a directory`);
  const srcName = basename(src);
  const newName = basename(dst);
  checkName(srcName, 'source');
  checkName(newName, 'destination');
  const argv = ['tar', '-c', '--numeric-owner', '-f', '-', '-C', dirname(src), `--transform=s,^${reEsc(srcName)}\\(/\\|$\\),${replEsc(newName)}\\1,S`, srcName];
  await withTar(argv, signal, async (child, setCall) => {
    // Listen (paused) before the first await: a small tree's tar exits at once.
    let call: StreamCall | undefined;
    let early: Buffer | undefined;
    const ended = new Promise<void>((r) => child.stdout!.once('end', r));
    child.stdout!.on('data', (b: Buffer) => {
      child.stdout!.pause();
      if (!call) early = early ? Buffer.concat([early, b]) : b;
      else void call.write(b).then(() => child.stdout!.resume());
    });
    call = await StreamCall.open(rpc.socketPath, 'vm.cpIn', { name: vm, path: into }, { stdout: () => {}, stderr: () => {} });
    setCall(call);
    if (early) await call.write(early);
    child.stdout!.resume();
    void ended.then(() => call!.eof());
    return (await call.done).code;
  });
}

export async function copyOut(rpc: RpcClient, vm: string, guestPath: string, hostPath: string, signal?: AbortSignal): Promise<void> {
  const src = trimSlash(guestPath);
  const s = await rpc.request('vm.stat', { name: vm, path: src }, { signal });
  if (!s.exists) throw new BangerError(ErrorCode.NotFound, `${vm}:${src}: no such file or directory`);
  const dst = resolve(hostPath);
  if (await lstat(dst).catch(() => undefined))
    throw new BangerError(ErrorCode.Exists, `${hostPath} already exists`, { hint: 'copyOut writes a new path: remove it or pick another name' });
  const srcName = basename(src);
  checkName(srcName, 'source');
  const into = await mkdtemp(join(dirname(dst), '.banger-copy-')).catch((e: NodeJS.ErrnoException) => {
    throw new BangerError(e.code === 'ENOENT' ? ErrorCode.NotFound : ErrorCode.Exec, `cannot create a directory beside ${hostPath}: ${e.code ?? e.message}`, {
      cause: e,
    });
  });
  try {
    // Guest data is untrusted: no owners or setuid bits from it; tar refuses `..` and absolute members.
    const argv = ['tar', '-x', '--no-same-owner', '--no-same-permissions', '--numeric-owner', '-f', '-', '-C', into];
    await withTar(argv, signal, async (child, setCall) => {
      let call: StreamCall | undefined;
      const call2 = await StreamCall.open(
        rpc.socketPath,
        'vm.cpOut',
        { name: vm, path: src },
        {
          stdout: (b: Buffer) => child.stdin!.write(b) || (child.stdin!.once('drain', () => call?.resume()), false),
          stderr: () => {},
        },
      );
      call = call2;
      setCall(call2);
      const exit = await call2.done;
      child.stdin!.end();
      return exit.code;
    });
    const top = await lstat(join(into, srcName)).catch(() => undefined);
    if (!top) throw new BangerError(ErrorCode.Agent, `${vm}:${src}: the guest's tar stream did not hold '${srcName}'`);
    await rename(join(into, srcName), dst);
  } finally {
    await rm(into, { recursive: true, force: true });
  }
}
