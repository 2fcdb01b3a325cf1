import { mkdtemp } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { BangerError, ErrorCode, errorMessage } from '../core/errors.js';
import type { StreamCall } from '../rpc/stream.js';
import { GuestTarExtractor, type GuestTarLimits } from './extract.js';
import { type OpenStream, trimSlash } from './names.js';
import { placeCopy, removePrivate } from './place.js';

export interface ReceiveOptions {
  open: OpenStream;
  vm: string;
  /** The guest path copied (its basename is the one top-level name the stream may hold). */
  src: string;
  /** Where the copy lands on this host (see placeCopy: a directory there is merged into). */
  final: string;
  /** Restore the owners the guest sent (the CLI's `-a` as root). */
  owners?: boolean;
  /** Prefixes messages (`vm cp: `). */
  label?: string;
  /** Ends the copy: the agent kills tar in the guest, nothing is written (E_CANCELLED). */
  signal?: AbortSignal;
  /** What tar in the guest prints (untrusted bytes); default: dropped. */
  onStderr?: (data: Buffer) => void;
  /** Told when the private directory could not be removed (default: ignored). */
  onLeftover?: (dir: string, e: unknown) => void;
  limits?: Partial<GuestTarLimits>;
}

/**
 * guest → host: the guest's `vm.cpOut` tar stream is read and checked by `GuestTarExtractor`
 * (extract.ts: the guest is untrusted) into a fresh private directory beside `final`, and only
 * a stream accepted as a whole is moved into place (place.ts): a refused, broken or cancelled
 * stream leaves nothing behind. Errors about what the guest sent are E_UNSAFE_ENTRY,
 * E_TOO_LARGE or E_INVALID, prefixed with `label` and `VM:SRC`.
 */
export async function receiveTree(o: ReceiveOptions): Promise<void> {
  const label = o.label ?? '';
  const top = basename(trimSlash(o.src));
  const tmp = await mkdtemp(join(dirname(o.final), '.banger-cp-')).catch((e: NodeJS.ErrnoException) => {
    const code = e.code === 'EACCES' ? ErrorCode.Permission : e.code === 'ENOENT' ? ErrorCode.NotFound : ErrorCode.Invalid;
    throw new BangerError(code, `${label}cannot write in ${dirname(o.final)}: ${e.code ?? e.message}`, { cause: e });
  });
  const ex = new GuestTarExtractor({ dir: tmp, top, owners: !!o.owners, limits: o.limits });
  const ours = (e: unknown) =>
    e instanceof BangerError && e.code !== ErrorCode.Cancelled
      ? new BangerError(e.code, `${label}${o.vm}:${o.src}: ${e.message}`, { cause: e, hint: e.hint, details: e.details })
      : e;
  let call: StreamCall | undefined;
  let fail!: (e: unknown) => void;
  const failed = new Promise<never>((_, reject) => (fail = reject));
  failed.catch(() => {});
  let stopped = false;
  const stop = (e: unknown) => {
    if (stopped) return;
    stopped = true;
    call?.close(); // the agent kills tar in the guest
    fail(e);
  };
  // Chunks are parsed one after another; the socket stays paused while they are.
  let work = Promise.resolve();
  let queued = 0;
  const sinks = {
    stdout: (b: Buffer) => {
      queued++;
      work = work
        .then(() => (stopped ? undefined : ex.push(b)))
        .catch((e) => stop(ours(e)))
        .finally(() => --queued === 0 && !stopped && call?.resume());
      return false;
    },
    stderr: (b: Buffer) => void o.onStderr?.(b),
  };
  const onAbort = () => stop(new BangerError(ErrorCode.Cancelled, `${label}cancelled; nothing was copied`, { cause: o.signal?.reason }));
  o.signal?.addEventListener('abort', onAbort, { once: true });
  if (o.signal?.aborted) onAbort();
  try {
    call = await o.open('vm.cpOut', { name: o.vm, path: o.src }, sinks);
    if (stopped) call.close();
    else if (queued === 0) call.resume(); // output that came with the reply was parsed before `call` was set
    const exit = await Promise.race([call.done, failed]);
    await Promise.race([work, failed]);
    if (exit.code !== 0) throw new BangerError(ErrorCode.Exec, `${label}tar in the guest failed (exit ${exit.code}); nothing was copied`);
    try {
      ex.end();
    } catch (e) {
      throw ours(e);
    }
    await placeCopy(join(tmp, top), o.final, label);
  } finally {
    ex.release();
    o.signal?.removeEventListener('abort', onAbort);
    await removePrivate(tmp).catch((e) => o.onLeftover?.(tmp, e));
  }
}
