import { connect, type Socket } from 'node:net';
import { BangerError, ErrorCode, errorMessage } from '../../../core/errors.js';
import { sleep } from '../../proc.js';

/**
 * Firecracker hybrid vsock, host → guest: connect the vsock UDS, send `CONNECT <port>\n`, read
 * `OK <hostport>\n`; the socket is then a byte stream to the guest's AF_VSOCK listener.
 * https://github.com/firecracker-microvm/firecracker/blob/main/docs/vsock.md
 *
 * Retries (every `retryDelayMs` until `timeoutMs`) only temporary conditions: the UDS is
 * absent or refuses (ENOENT/ECONNREFUSED: Firecracker not there yet) or Firecracker closes
 * the connection without an answer (nothing listens on the port yet: the guest is booting).
 * A malformed answer is a protocol error and fails at once. Rejects with E_TIMEOUT (last
 * temporary error in the message), E_CANCELLED, or E_VMM (protocol).
 */
export async function connectHybridVsock(
  udsPath: string,
  port: number,
  o: { timeoutMs?: number; retryDelayMs?: number; signal?: AbortSignal } = {},
): Promise<Socket> {
  if (!Number.isInteger(port) || port < 0 || port > 0xffffffff) throw new BangerError(ErrorCode.Invalid, `vsock port ${port} is not a u32`);
  const timeoutMs = o.timeoutMs ?? 10_000;
  const deadline = Date.now() + timeoutMs;
  let last = 'no attempt';
  for (;;) {
    if (o.signal?.aborted) throw new BangerError(ErrorCode.Cancelled, `vsock connect to port ${port} cancelled`);
    const left = deadline - Date.now();
    const r = await attempt(udsPath, port, Math.max(100, Math.min(left, 3000)));
    if (r.sock) return r.sock;
    if (!r.temporary) throw new BangerError(ErrorCode.Vmm, `vsock ${udsPath} port ${port}: ${r.error}`, { details: { udsPath, port } });
    last = r.error;
    if (Date.now() + (o.retryDelayMs ?? 100) >= deadline) {
      throw new BangerError(ErrorCode.Timeout, `vsock ${udsPath} port ${port}: no connection within ${timeoutMs} ms (${last})`, {
        details: { udsPath, port },
        hint: 'is the guest agent running in the VM?',
      });
    }
    await sleep(o.retryDelayMs ?? 100);
  }
}

function attempt(udsPath: string, port: number, timeoutMs: number): Promise<{ sock?: Socket; temporary?: boolean; error: string }> {
  return new Promise((resolve) => {
    const sock = connect(udsPath);
    let buf = Buffer.alloc(0);
    let done = false;
    const finish = (r: { sock?: Socket; temporary?: boolean; error: string }) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.off('readable', onReadable);
      sock.off('close', onClose);
      if (!r.sock) sock.destroy();
      resolve(r);
    };
    const timer = setTimeout(() => finish({ temporary: true, error: `no answer to CONNECT within ${timeoutMs} ms` }), timeoutMs);
    // Paused mode ('readable' + read()), never pause(): once the listener is gone the caller's
    // own 'data' listener starts the flow, and bytes past the OK line are unshifted for it.
    const onReadable = () => {
      let chunk: Buffer | null;
      while (!done && (chunk = sock.read() as Buffer | null) !== null) {
        buf = Buffer.concat([buf, chunk]);
        const nl = buf.indexOf(0x0a);
        if (nl < 0) {
          if (buf.length > 32) finish({ error: `protocol error: answer too long: ${JSON.stringify(buf.toString('latin1').slice(0, 40))}` });
          continue;
        }
        const line = buf.subarray(0, nl).toString('latin1');
        const rest = buf.subarray(nl + 1);
        if (!/^OK \d+$/.test(line)) return finish({ error: `protocol error: expected "OK <port>", got ${JSON.stringify(line.slice(0, 40))}` });
        if (rest.length) sock.unshift(rest);
        finish({ sock, error: '' });
      }
    };
    const onClose = () => finish({ temporary: true, error: 'closed before answering (nothing listens on the port yet)' });
    sock.on('readable', onReadable);
    sock.on('connect', () => sock.write(`CONNECT ${port}\n`));
    sock.on('error', (e: NodeJS.ErrnoException) =>
      finish({ temporary: e.code === 'ENOENT' || e.code === 'ECONNREFUSED' || e.code === 'ECONNRESET', error: `${e.code ?? ''} ${errorMessage(e)}`.trim() }),
    );
    sock.on('close', onClose);
  });
}
