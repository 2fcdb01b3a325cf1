import { connect, type Socket } from 'node:net';
import { BangerError, ErrorCode, errorMessage } from '../../core/errors.js';

/** Errors that mean "not there yet" while a VMM starts: retried until the deadline. */
const TEMPORARY = new Set(['ENOENT', 'ECONNREFUSED', 'EAGAIN']);

/**
 * Connect to a Unix stream socket, retrying while it does not exist yet or refuses (a VMM
 * still starting) until `timeoutMs`; other errors fail at once. Rejects with E_TIMEOUT when
 * the deadline passes, E_CANCELLED when `signal` aborts, E_VMM for any other error; never
 * leaves a socket open on failure. Shared by drivers for their agent channels.
 */
export async function connectUnixStream(path: string, o: { signal?: AbortSignal; timeoutMs: number; what?: string }): Promise<Socket> {
  const what = o.what ?? path;
  const deadline = Date.now() + o.timeoutMs;
  for (;;) {
    if (o.signal?.aborted) throw new BangerError(ErrorCode.Cancelled, `${what}: cancelled`);
    const left = deadline - Date.now();
    if (left <= 0) throw new BangerError(ErrorCode.Timeout, `${what}: no connection within ${o.timeoutMs} ms`, { details: { path } });
    try {
      return await connectOnce(path, left, o.signal);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (e instanceof BangerError) throw e;
      if (!code || !TEMPORARY.has(code)) throw new BangerError(ErrorCode.Vmm, `${what}: ${errorMessage(e)}`, { cause: e, details: { path } });
      await new Promise((r) => setTimeout(r, Math.min(100, Math.max(0, deadline - Date.now()))));
    }
  }
}

function connectOnce(path: string, timeoutMs: number, signal?: AbortSignal): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const sock = connect(path);
    const fail = (e: Error) => {
      cleanup();
      sock.destroy();
      reject(e);
    };
    const onAbort = () => fail(new BangerError(ErrorCode.Cancelled, `${path}: cancelled`));
    const timer = setTimeout(() => fail(new BangerError(ErrorCode.Timeout, `${path}: connect timed out after ${timeoutMs} ms`)), timeoutMs);
    const cleanup = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      sock.off('error', fail);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    sock.once('error', fail);
    sock.once('connect', () => {
      cleanup();
      resolve(sock);
    });
  });
}
