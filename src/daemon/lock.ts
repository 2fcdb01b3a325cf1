import { link, lstat, open, readFile, stat, unlink } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { BangerError, ErrorCode } from '../core/errors.js';

/**
 * One daemon per state root. `<root>/bangerd.lock` holds "PID STARTTIME" of the daemon that
 * owns the root (STARTTIME: field 22 of /proc/PID/stat, so a recycled pid is not mistaken for
 * the owner). It is taken before the daemon touches anything under the root (tmp/, RAM
 * staging, database, reconcile).
 *
 * Taking it: write the record to a temp file and link() it into place (fails if one exists).
 * If it exists and its owner is alive, refuse with "already serving ROOT (pid N)". If the owner
 * is dead, take over: hard-link the stale lock to `bangerd.lock.takeover` (link() is atomic, so
 * one contender at a time holds that name), check the lock is still that same stale file (same
 * inode, same record), unlink it, drop the takeover name, and link our own record again. Only a
 * takeover holder ever unlinks a lock that is not its own, and no step overwrites a lock file.
 * A takeover name left by a contender that crashed mid-takeover is cleared after 10 s.
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
  for (let attempt = 0; attempt < 100; attempt++) {
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
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST')
        throw new BangerError(ErrorCode.Daemon, `cannot create lock ${path}: ${(e as Error).message}`, { cause: e });
    } finally {
      await unlink(tmp).catch(() => undefined);
    }
    const text = await readFile(path, 'utf8').catch(() => undefined);
    if (text === undefined) continue; // released meanwhile: try again
    const rec = parse(text);
    if (rec && alive(rec)) {
      throw new BangerError(ErrorCode.InUse, `already serving ${root} (pid ${rec.pid})`, {
        hint: "stop that daemon first ('banger daemon stop'), or use another BANGER_ROOT",
        details: { pid: rec.pid, lock: path },
      });
    }
    // Stale (dead owner, or a record we cannot parse): take it over. Only the holder of the
    // takeover name may unlink the lock, and it does so only after checking through its own
    // hard link that the lock is still the very stale file it judged.
    const takeover = `${path}.takeover`;
    try {
      await link(path, takeover);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') await clearAbandonedTakeover(takeover);
      else if (code !== 'ENOENT') throw e;
      await new Promise((r) => setTimeout(r, 20));
      continue;
    }
    try {
      const [held, cur] = await Promise.all([stat(takeover), stat(path).catch(() => undefined)]);
      if (cur?.ino === held.ino && (await readFile(takeover, 'utf8')) === text) await unlink(path);
    } finally {
      await unlink(takeover).catch(() => undefined);
    }
  }
  throw new BangerError(ErrorCode.Daemon, `could not take the lock ${path} (it keeps changing)`, { hint: 'another bangerd is starting on this root' });
}

/** A takeover name left by a contender that died mid-takeover (its link is older than 10 s). */
async function clearAbandonedTakeover(takeover: string): Promise<void> {
  const st = await lstat(takeover).catch(() => undefined);
  if (st && Date.now() - st.ctimeMs > 10_000) await unlink(takeover).catch(() => undefined);
}

async function releaseIfMine(path: string, mine: string): Promise<void> {
  const text = await readFile(path, 'utf8').catch(() => undefined);
  if (text === mine) await unlink(path).catch(() => undefined);
}
