import { lstat, unlink } from 'node:fs/promises';
import { connect } from 'node:net';
import { BangerError, ErrorCode } from '../core/errors.js';

/**
 * What is at a socket path before bangerd binds it:
 * - `free`: nothing;
 * - `stale`: a Unix socket nobody listens on (connect fails with ECONNREFUSED), safe to remove;
 * - `live`: a socket something answers on;
 * - `other`: anything else (regular file, directory, symlink, FIFO …), never to be touched.
 */
export type SocketPathState = { kind: 'free' } | { kind: 'stale' } | { kind: 'live' } | { kind: 'other'; what: string };

export async function inspectSocketPath(path: string): Promise<SocketPathState> {
  let st;
  try {
    st = await lstat(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'free' };
    throw new BangerError(ErrorCode.Daemon, `cannot inspect socket path ${path}: ${(e as Error).message}`, { cause: e });
  }
  if (!st.isSocket())
    return { kind: 'other', what: st.isDirectory() ? 'a directory' : st.isSymbolicLink() ? 'a symlink' : st.isFile() ? 'a regular file' : 'not a socket' };
  const code = await probe(path);
  if (code === undefined) return { kind: 'live' };
  if (code === 'ECONNREFUSED') return { kind: 'stale' };
  throw new BangerError(ErrorCode.Daemon, `cannot tell whether the socket ${path} is in use (${code})`, { hint: 'remove it yourself if no bangerd uses it' });
}

/**
 * Make `path` ready to bind: free stays free, a provably dead socket is removed, anything else
 * is an error naming the path and what is there. Nothing else is ever deleted.
 */
export async function claimSocketPath(path: string): Promise<void> {
  const s = await inspectSocketPath(path);
  if (s.kind === 'free') return;
  if (s.kind === 'live') {
    throw new BangerError(ErrorCode.Daemon, `another bangerd is already serving ${path}`, {
      hint: "stop it first ('banger daemon stop') or use another BANGER_ROOT/BANGER_SOCKET",
    });
  }
  if (s.kind === 'other') {
    throw new BangerError(ErrorCode.Exists, `socket path ${path} is ${s.what}, not a socket; bangerd will not remove it`, {
      hint: 'move it away or point BANGER_SOCKET elsewhere',
    });
  }
  await unlink(path).catch((e: NodeJS.ErrnoException) => {
    if (e.code !== 'ENOENT') throw e;
  });
}

/** undefined when something accepted the connection, else the connect error code. */
function probe(path: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    const s = connect(path);
    const timer = setTimeout(() => {
      s.destroy();
      resolve('ETIMEDOUT');
    }, 2000);
    s.once('connect', () => {
      clearTimeout(timer);
      s.destroy();
      resolve(undefined);
    });
    s.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve(e.code ?? 'EUNKNOWN');
    });
  });
}
