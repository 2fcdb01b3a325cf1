import { link, open, readFile, rename, unlink } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { BangerError, ErrorCode } from '../core/errors.js';

/**
 * One daemon per state root. `<root>/bangerd.lock` holds "PID STARTTIME" of the daemon that
 * owns the root (STARTTIME: field 22 of /proc/PID/stat, so a recycled pid is not mistaken for
 * the owner). It is taken before the daemon touches anything under the root (tmp/, RAM
 * staging, database, reconcile).
 *
 * Taking it: write the record to a temp file and link() it into place (fails if one exists). If it exists and its owner is alive, refuse with
 * "already serving ROOT (pid N)". If the owner is dead, take over atomically: rename the stale
 * file to a name of our own (only one contender can win that rename), check that what we moved
 * is the stale record we judged (else put it back: it was a newer owner's), then link again. No step ever overwrites a lock file.
 */
export interface RootLock {
  readonly path: string;
  /** Remove the lock if it is still ours. Idempotent. */
  release(): Promise<void>;
}

/** Start time of a process in clock ticks since boot, or undefined when it does not exist. */
export function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // comm (field 2) may contain spaces and parentheses: split after the last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

function parse(text: string): { pid: number; start: string } | undefined {
  const m = /^(\d+) (\d+)\n?$/.exec(text);
  return m ? { pid: Number(m[1]), start: m[2]! } : undefined;
}

/** True when the record names a process that is still the one that wrote it. */
function alive(rec: { pid: number; start: string }): boolean {
  return processStartTime(rec.pid) === rec.start;
}

/** Take the lock `path` (Layout.lockFile) of state root `root`; throws E_IN_USE when a live daemon holds it. */
export async function acquireRootLock(root: string, path: string): Promise<RootLock> {
  const mine = `${process.pid} ${processStartTime(process.pid)}\n`;
  for (let attempt = 0; attempt < 5; attempt++) {
    // The record is written in full first and then linked into place: link() never
    // overwrites, and nobody ever sees a half-written lock file.
    const tmp = `${path}.${process.pid}.tmp`;
    try {
      const fh = await open(tmp, 'w', 0o600);
      try {
        await fh.writeFile(mine);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await link(tmp, path);
      return { path, release: () => releaseIfMine(path, mine) };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw new BangerError(ErrorCode.Daemon, `cannot create lock ${path}: ${(e as Error).message}`, { cause: e });
    } finally {
      await unlink(tmp).catch(() => undefined);
    }
    const text = await readFile(path, 'utf8').catch(() => undefined);
    if (text === undefined) continue; // released meanwhile: try again
    const rec = parse(text);
    if (rec && alive(rec)) {
      throw new BangerError(ErrorCode.InUse, `already serving ${root} (pid ${rec.pid})`, { hint: "stop that daemon first ('banger daemon stop'), or use another BANGER_ROOT", details: { pid: rec.pid, lock: path } });
    }
    // Stale (dead owner, or an unreadable record a crash cut short): take it over.
    const aside = `${path}.stale.${process.pid}`;
    try {
      await rename(path, aside);
    } catch {
      continue; // another contender moved it first
    }
    const moved = await readFile(aside, 'utf8').catch(() => '');
    if (moved !== text) {
      // We moved a newer owner's lock: put it back (unless yet another one exists) and refuse.
      await link(aside, path).catch(() => undefined);
      await unlink(aside).catch(() => undefined);
      const r = parse(moved);
      throw new BangerError(ErrorCode.InUse, `already serving ${root} (pid ${r?.pid ?? '?'})`, { details: { pid: r?.pid, lock: path } });
    }
    await unlink(aside).catch(() => undefined);
  }
  throw new BangerError(ErrorCode.Daemon, `could not take the lock ${path} (it keeps changing)`, { hint: 'another bangerd is starting on this root' });
}

async function releaseIfMine(path: string, mine: string): Promise<void> {
  const text = await readFile(path, 'utf8').catch(() => undefined);
  if (text === mine) await unlink(path).catch(() => undefined);
}
