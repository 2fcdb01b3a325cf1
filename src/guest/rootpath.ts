import { lstat, mkdir, readlink, realpath, rename, rm, symlink, chmod, open } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { basename, join, posix, sep } from 'node:path';
import { BangerError, ErrorCode } from '../core/errors.js';

/**
 * Writing inside an unpacked root filesystem as the guest would see it, never outside it.
 *
 * Guest paths are resolved component by component the way the guest kernel will resolve them
 * once `rootDir` is its `/`: an absolute symlink target restarts at `rootDir` (not at the
 * host's `/`), a relative one continues from the link's directory. A target that climbs above
 * the root with `..` is refused (E_UNSAFE_ENTRY): a real image never needs it, and on the host
 * it would point outside the image. The final component is replaced by rename, so an existing
 * symlink there is replaced, never written through.
 */

const MAX_LINKS = 40;

function parts(p: string): string[] {
  return p.split('/').filter((c) => c !== '' && c !== '.');
}

function unsafe(guestPath: string, why: string): BangerError {
  return new BangerError(ErrorCode.Unsafe, `cannot write ${guestPath} in the image: ${why}`, {
    hint: "the image contains a symlink or file that would redirect banger's guest files outside its root filesystem; fix the image",
    details: { path: guestPath },
  });
}

/**
 * Resolves the guest directory `guestDir` to a host path inside `rootDir`, creating missing
 * directories (0755) when `create` is true. Returns undefined when a component is missing and
 * `create` is false. Throws E_UNSAFE_ENTRY when the path escapes the root or crosses a file.
 */
export async function resolveGuestDir(rootDir: string, guestDir: string, create: boolean): Promise<string | undefined> {
  const queue = parts(guestDir);
  const stack: string[] = [];
  let links = 0;
  while (queue.length > 0) {
    const c = queue.shift()!;
    if (c === '..') {
      if (stack.length === 0) throw unsafe(guestDir, `a symlink climbs above the root (at /${stack.join('/')})`);
      stack.pop();
      continue;
    }
    const host = join(rootDir, ...stack, c);
    let st;
    try {
      st = await lstat(host);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      if (!create) return undefined;
      await mkdir(host, { mode: 0o755 });
      await chmod(host, 0o755);
      stack.push(c);
      continue;
    }
    if (st.isSymbolicLink()) {
      if (++links > MAX_LINKS) throw unsafe(guestDir, 'too many levels of symlinks');
      const target = await readlink(host);
      if (target.startsWith('/')) stack.length = 0;
      queue.unshift(...parts(target));
      continue;
    }
    if (!st.isDirectory()) throw unsafe(guestDir, `/${[...stack, c].join('/')} is not a directory`);
    stack.push(c);
  }
  const resolved = join(rootDir, ...stack);
  // Belt and braces: the real path must still be rootDir or below it.
  const [realRoot, realResolved] = await Promise.all([realpath(rootDir), realpath(resolved)]);
  if (realResolved !== realRoot && !realResolved.startsWith(realRoot + sep)) throw unsafe(guestDir, 'resolves outside the root filesystem');
  return resolved;
}

function tmpName(dir: string, name: string): string {
  return join(dir, `.${name}.banger-${randomBytes(4).toString('hex')}.tmp`);
}

/** Writes `data` at guest path `guestPath` with `mode` (exactly; umask ignored), atomically. */
export async function writeGuestFile(rootDir: string, guestPath: string, data: Buffer | string, mode: number): Promise<string> {
  const dir = (await resolveGuestDir(rootDir, posix.dirname(guestPath), true))!;
  const target = join(dir, basename(guestPath));
  await refuseDirectory(target, guestPath);
  const tmp = tmpName(dir, basename(guestPath));
  try {
    const fh = await open(tmp, 'wx', mode);
    try {
      await fh.writeFile(data);
      await fh.chmod(mode);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, target);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
  return target;
}

/** Creates (or replaces) a symlink at guest path `guestPath` pointing to `target`. */
export async function writeGuestSymlink(rootDir: string, guestPath: string, target: string): Promise<string> {
  const dir = (await resolveGuestDir(rootDir, posix.dirname(guestPath), true))!;
  const at = join(dir, basename(guestPath));
  await refuseDirectory(at, guestPath);
  const tmp = tmpName(dir, basename(guestPath));
  try {
    await symlink(target, tmp);
    await rename(tmp, at);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
  return at;
}

async function refuseDirectory(hostPath: string, guestPath: string): Promise<void> {
  try {
    const st = await lstat(hostPath);
    if (st.isDirectory()) throw unsafe(guestPath, 'a directory is in the way');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
}

/** True when a regular file exists at the guest path (symlinks resolved inside the root). */
export async function guestFileExists(rootDir: string, guestPath: string, depth = 0): Promise<boolean> {
  if (depth > MAX_LINKS) return false;
  try {
    const dir = await resolveGuestDir(rootDir, posix.dirname(guestPath), false);
    if (!dir) return false;
    const p = join(dir, basename(guestPath));
    const st = await lstat(p);
    if (st.isSymbolicLink()) {
      const t = await readlink(p);
      const base = t.startsWith('/') ? t : posix.join(posix.dirname(guestPath), t);
      return guestFileExists(rootDir, posix.normalize(base), depth + 1);
    }
    return st.isFile();
  } catch (e) {
    if (e instanceof BangerError || (e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
}
