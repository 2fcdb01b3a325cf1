import { constants as C } from 'node:fs';
import { access, chmod, lstat, mkdtemp, readdir, rename, rm, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { BangerError, ErrorCode, errorMessage } from '../core/errors.js';
import type { Cli } from './context.js';
import { GuestTarExtractor } from './cp-extract.js';
import { resumedLine, StreamCall } from './stream-client.js';

const trimSlash = (p: string) => (p.length > 1 ? p.replace(/\/+$/, '') : p);

export function checkCpName(n: string, what: string): void {
  if (n.includes('\n') || n === '' || n === '.' || n === '..') throw new BangerError(ErrorCode.Invalid, `vm cp: ${what} '${n}' cannot be copied by name`);
}

export interface CopyOutOptions {
  /** `-a`: restore the owners the guest sent (only when the CLI runs as root). */
  archive?: boolean;
}

/**
 * VM → host, with docker cp's rules for DST: an existing directory receives SRC inside it as
 * basename(SRC) (a directory of that name already there is merged into); otherwise SRC becomes
 * DST. The guest's tar stream is read and checked by `GuestTarExtractor` (src/cli/cp-extract.ts)
 * into a fresh private directory beside the destination, and only a stream accepted as a whole
 * is moved into place: a refused or broken stream leaves nothing behind.
 */
export async function copyOut(c: Cli, vm: string, src: string, dstArg: string, o: CopyOutOptions = {}): Promise<void> {
  const s = await c.call('vm.stat', { name: vm, path: src });
  if (!s.exists) throw new BangerError(ErrorCode.NotFound, `vm cp: ${vm}:${src}: no such file or directory`);
  const dst = resolve(dstArg);
  const d = await stat(dst).catch(() => undefined);
  const top = basename(trimSlash(src));
  checkCpName(top, 'source');
  if (d && !d.isDirectory() && s.type === 'dir') throw new BangerError(ErrorCode.Invalid, `vm cp: cannot copy directory ${vm}:${src} onto the file ${dstArg}`);
  if (!d && dstArg.endsWith('/')) throw new BangerError(ErrorCode.NotFound, `vm cp: destination directory ${dstArg} does not exist`);
  const final = d?.isDirectory() ? join(dst, top) : dst;
  const owners = !!o.archive && process.geteuid?.() === 0;
  if (o.archive && !owners) process.stderr.write('vm cp: -a: not running as root, so the copy belongs to you (owners are not restored)\n');

  const tmp = await mkdtemp(join(dirname(final), '.banger-cp-')).catch((e: NodeJS.ErrnoException) => {
    throw new BangerError(e.code === 'EACCES' ? ErrorCode.Permission : ErrorCode.Invalid, `vm cp: cannot write in ${dirname(final)}: ${e.code ?? e.message}`, {
      cause: e,
    });
  });
  const ex = new GuestTarExtractor({ dir: tmp, top, owners });
  /** Errors of the extraction name the copy; what the guest sent is E_UNSAFE_ENTRY, E_TOO_LARGE or E_INVALID. */
  const ours = (e: unknown) =>
    e instanceof BangerError && e.code !== ErrorCode.Cancelled
      ? new BangerError(e.code, `vm cp: ${vm}:${src}: ${e.message}`, { cause: e, hint: e.hint, details: e.details })
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
    // tar's messages from the guest: shown, without terminal control sequences
    stderr: (b: Buffer) => void process.stderr.write(b.toString('utf8').replace(/[\x00-\x08\x0b-\x1f\x7f\x9b]/g, '?')),
  };
  const onSignal = () => stop(new BangerError(ErrorCode.Cancelled, 'vm cp: cancelled; nothing was copied'));
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    call = await StreamCall.open(c, 'vm.cpOut', { name: vm, path: src }, sinks);
    resumedLine(vm, call.reply.resumedMs);
    if (stopped) call.close();
    else if (queued === 0) call.resume(); // output that came with the reply was parsed before `call` was set
    const exit = await Promise.race([call.done, failed]);
    await Promise.race([work, failed]);
    if (exit.code !== 0) throw new BangerError(ErrorCode.Exec, `vm cp: tar in the guest failed (exit ${exit.code}); nothing was copied`);
    try {
      ex.end();
    } catch (e) {
      throw ours(e);
    }
    await placeCopy(join(tmp, top), final);
  } finally {
    ex.release();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await removePrivate(tmp).catch((e) => process.stderr.write(`vm cp: could not remove the temporary directory ${tmp}: ${errorMessage(e)}\n`));
  }
}

/**
 * Moves the extracted `from` to `to` without following anything at `to`: a file or symlink
 * there is replaced (rename(2) replaces the name, not what a symlink points to); a directory
 * onto an existing directory is merged (its existing mode and owner are kept); a non-directory
 * onto a directory is an error. Every move is planned and checked (conflicts, write access to
 * each directory that receives an entry) before the first one, so an error leaves the
 * destination as it was.
 */
export async function placeCopy(from: string, to: string): Promise<void> {
  const moves: Array<{ from: string; to: string; replace: boolean }> = [];
  const merged: string[] = [];
  const receiving = new Set<string>([dirname(to)]);
  const plan = async (f: string, t: string): Promise<void> => {
    const fs = await lstat(f);
    const ts = await lstat(t).catch(() => undefined);
    if (ts?.isDirectory() && !fs.isDirectory())
      throw new BangerError(ErrorCode.Invalid, `vm cp: cannot overwrite the directory ${t} with a non-directory; nothing was copied`);
    if (!ts?.isDirectory() || !fs.isDirectory()) {
      moves.push({ from: f, to: t, replace: !!ts && fs.isDirectory() });
      receiving.add(dirname(t));
      return;
    }
    merged.push(f);
    for (const name of await readdir(f)) await plan(join(f, name), join(t, name));
  };
  await plan(from, to);
  for (const d of receiving) {
    await access(d, C.W_OK | C.X_OK).catch((e: NodeJS.ErrnoException) => {
      throw new BangerError(ErrorCode.Permission, `vm cp: cannot write into ${d} (${e.code ?? e.message}); nothing was copied`, { cause: e });
    });
  }
  // our own directories being merged are discarded afterwards; their entries must be movable
  for (const m of merged) await chmod(m, 0o700);
  for (const m of moves) {
    if (m.replace) await unlink(m.to); // a directory replaces a file or symlink
    await rename(m.from, m.to);
  }
}

/** Removes our private directory even when it holds read-only directories (modes are applied before the move). */
async function removePrivate(dir: string): Promise<void> {
  try {
    await rm(dir, { recursive: true, force: true });
  } catch {
    const open = async (p: string): Promise<void> => {
      const st = await lstat(p).catch(() => undefined);
      if (!st?.isDirectory()) return;
      await chmod(p, 0o700);
      for (const n of await readdir(p)) await open(join(p, n));
    };
    await open(dir);
    await rm(dir, { recursive: true, force: true });
  }
}
