import { basename, dirname } from 'node:path';
import { BangerError, ErrorCode } from '../core/errors.js';
import { exitOf, spawnPiped } from '../core/exec.js';
import type { StreamCall, StreamSinks } from '../rpc/stream.js';
import type { OpenStream } from './names.js';

/** Escapes a name for a GNU tar --transform expression `s,RE,REPL,S`. */
const reEsc = (s: string) => s.replace(/[\\.[\]*^$,]/g, (c) => `\\${c}`);
const replEsc = (s: string) => s.replace(/[\\&,]/g, (c) => `\\${c}`);

export interface SendOptions {
  open: OpenStream;
  vm: string;
  /** The host file or directory (absolute). */
  src: string;
  /** The guest directory it lands in (tar in the guest extracts there, as root). */
  into: string;
  /** The name it gets there; default its own (basename of `src`). */
  as?: string;
  /** Prefixes error messages (`vm cp: `). */
  label?: string;
  signal?: AbortSignal;
  /** What tar in the guest prints; default: dropped. */
  sinks?: StreamSinks;
}

/**
 * host → guest: GNU tar on this host (`-c --numeric-owner`, renamed to `as` with --transform)
 * pumped into a `vm.cpIn` stream, where the guest's tar extracts it as root. Both tars must
 * succeed. `signal` ends both (E_CANCELLED).
 */
export async function sendTree(o: SendOptions): Promise<void> {
  const label = o.label ?? '';
  const name = basename(o.src);
  const rename = o.as !== undefined && o.as !== name ? [`--transform=s,^${reEsc(name)}\\(/\\|$\\),${replEsc(o.as)}\\1,S`] : [];
  const argv = ['tar', '-c', '--numeric-owner', '-f', '-', '-C', dirname(o.src), ...rename, name];
  const cancelled = (cause: unknown) => new BangerError(ErrorCode.Cancelled, `${label}copy cancelled`, { cause });
  if (o.signal?.aborted) throw cancelled(o.signal.reason);
  const child = spawnPiped(argv);
  const err: Buffer[] = [];
  child.stderr!.on('data', (d: Buffer) => err.length < 64 && err.push(d));
  const exited = exitOf(child, argv);
  let call: StreamCall | undefined;
  const onAbort = () => {
    call?.close();
    child.kill('SIGKILL');
  };
  o.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    // Listen (paused) before the first await: Node discards the output of a child that exits
    // while nobody listens to its stdout, and a small tree's tar exits at once.
    let early: Buffer | undefined;
    const ended = new Promise<void>((r) => child.stdout!.once('end', r));
    child.stdout!.on('data', (b: Buffer) => {
      child.stdout!.pause();
      if (!call) early = early ? Buffer.concat([early, b]) : b;
      else void call.write(b).then(() => child.stdout!.resume());
    });
    const guest = await (async () => {
      call = await o.open('vm.cpIn', { name: o.vm, path: o.into }, o.sinks ?? { stdout: () => {}, stderr: () => {} });
      if (o.signal?.aborted) onAbort();
      if (early) await call.write(early);
      child.stdout!.resume();
      void ended.then(() => call!.eof());
      return (await call.done).code;
    })().catch(async (e) => {
      child.kill('SIGKILL');
      await exited.catch(() => {});
      throw e;
    });
    const code = await exited;
    if (o.signal?.aborted) throw cancelled(o.signal.reason);
    if (code !== 0)
      throw new BangerError(
        ErrorCode.Exec,
        `${label}local tar failed (exit ${code}): ${Buffer.concat(err).toString().trim().split('\n').slice(-3).join('; ')}`,
      );
    if (guest !== 0) throw new BangerError(ErrorCode.Exec, `${label}tar in the guest failed (exit ${guest})`);
  } catch (e) {
    if (o.signal?.aborted && !(e instanceof BangerError && e.code === ErrorCode.Cancelled)) throw cancelled(e);
    throw e;
  } finally {
    o.signal?.removeEventListener('abort', onAbort);
  }
}
