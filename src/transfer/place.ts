import { constants as C } from 'node:fs';
import { access, chmod, lstat, readdir, rename, rm, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { BangerError, ErrorCode } from '../core/errors.js';

/**
 * Moves the extracted `from` to `to` without following anything at `to`: a file or symlink
 * there is replaced (rename(2) replaces the name, not what a symlink points to); a directory
 * onto an existing directory is merged (its existing mode and owner are kept); a non-directory
 * onto a directory is an error. Every move is planned and checked (conflicts, write access to
 * each directory that receives an entry) before the first one, so an error leaves the
 * destination as it was. `label` prefixes messages (`vm cp: `).
 */
export async function placeCopy(from: string, to: string, label = ''): Promise<void> {
  const moves: Array<{ from: string; to: string; replace: boolean }> = [];
  const merged: string[] = [];
  const receiving = new Set<string>([dirname(to)]);
  const plan = async (f: string, t: string): Promise<void> => {
    const fs = await lstat(f);
    const ts = await lstat(t).catch(() => undefined);
    if (ts?.isDirectory() && !fs.isDirectory())
      throw new BangerError(ErrorCode.Invalid, `${label}cannot overwrite the directory ${t} with a non-directory; nothing was copied`);
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
      throw new BangerError(ErrorCode.Permission, `${label}cannot write into ${d} (${e.code ?? e.message}); nothing was copied`, { cause: e });
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
export async function removePrivate(dir: string): Promise<void> {
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
