import { connect } from 'node:net';
import { BangerError, ErrorCode } from '../../../core/errors.js';

/**
 * A one-shot QMP client: connect to the QMP Unix socket, read the greeting, negotiate
 * capabilities, run one command, close. Resolves with the command's `return` value.
 * Errors: E_VMM when the socket does not answer within `timeoutMs` or QMP reports an error.
 */
export function qmpCommand(socketPath: string, command: string, args?: Record<string, unknown>, timeoutMs = 3000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const sock = connect(socketPath);
    let buf = '';
    let stage = 0; // 0 greeting, 1 capabilities sent, 2 command sent
    const fail = (msg: string, cause?: unknown) => {
      clearTimeout(timer);
      sock.destroy();
      reject(new BangerError(ErrorCode.Vmm, `QMP ${command} on ${socketPath}: ${msg}`, { cause }));
    };
    const timer = setTimeout(() => fail(`no answer within ${timeoutMs} ms`), timeoutMs);
    sock.on('error', (e) => fail(e.message, e));
    sock.on('close', () => {
      if (stage === 2 && command === 'quit') {
        clearTimeout(timer);
        resolve({});
      }
    });
    sock.on('data', (d) => {
      buf += d.toString('utf8');
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i).trim();
        buf = buf.slice(i + 1);
        if (!line) continue;
        let msg: { QMP?: unknown; return?: unknown; error?: { desc?: string }; event?: string };
        try {
          msg = JSON.parse(line);
        } catch (e) {
          return fail('invalid JSON from QEMU', e);
        }
        if (msg.event) continue;
        if (stage === 0 && msg.QMP) {
          stage = 1;
          sock.write(JSON.stringify({ execute: 'qmp_capabilities' }) + '\n');
        } else if (stage === 1) {
          if (msg.error) return fail(msg.error.desc ?? 'capabilities refused');
          stage = 2;
          sock.write(JSON.stringify(args ? { execute: command, arguments: args } : { execute: command }) + '\n');
        } else if (stage === 2) {
          clearTimeout(timer);
          sock.end();
          if (msg.error) return reject(new BangerError(ErrorCode.Vmm, `QMP ${command}: ${msg.error.desc ?? 'error'}`));
          return resolve(msg.return);
        }
      }
    });
  });
}
