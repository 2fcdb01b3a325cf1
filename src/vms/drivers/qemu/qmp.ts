import { connect, type Socket } from 'node:net';
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

/**
 * A QMP session for several commands in a row (save and restore: stop, migrate, query-migrate
 * …). `open` connects, reads the greeting and negotiates capabilities; `cmd` runs one command
 * and resolves with its `return` (E_VMM on a QMP error, on a closed socket, or after
 * `timeoutMs`); events are ignored. Everything QEMU sends is bounded (one line ≤ 1 MiB).
 */
export class QmpSession {
  private buf = '';
  private waiting: Array<{ resolve: (v: unknown) => void; reject: (e: Error) => void; command: string }> = [];
  private closed = false;

  private constructor(
    private readonly sock: Socket,
    private readonly path: string,
  ) {
    sock.on('data', (d) => this.onData(d));
    sock.on('close', () => this.fail(new BangerError(ErrorCode.Vmm, `QMP on ${path}: connection closed`)));
    sock.on('error', (e) => this.fail(new BangerError(ErrorCode.Vmm, `QMP on ${path}: ${e.message}`, { cause: e })));
  }

  static async open(path: string, timeoutMs = 5000): Promise<QmpSession> {
    const sock = connect(path);
    const s = new QmpSession(sock, path);
    // The greeting is answered like a command with no request.
    await s.wait('greeting', timeoutMs);
    await s.cmd('qmp_capabilities', undefined, timeoutMs);
    return s;
  }

  cmd(command: string, args?: Record<string, unknown>, timeoutMs = 5000): Promise<unknown> {
    const p = this.wait(command, timeoutMs);
    this.sock.write(JSON.stringify(args ? { execute: command, arguments: args } : { execute: command }) + '\n');
    return p;
  }

  /** Close the connection (a pending `quit` counts a closed socket as its answer). */
  close(): void {
    this.closed = true;
    this.sock.destroy();
  }

  private wait(command: string, timeoutMs: number): Promise<unknown> {
    return new Promise((resolve, reject) => {
      if (this.closed) return reject(new BangerError(ErrorCode.Vmm, `QMP ${command} on ${this.path}: connection closed`));
      const timer = setTimeout(() => {
        this.close();
        reject(new BangerError(ErrorCode.Vmm, `QMP ${command} on ${this.path}: no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiting.push({
        command,
        resolve: (v) => (clearTimeout(timer), resolve(v)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      });
    });
  }

  private fail(e: Error): void {
    this.closed = true;
    for (const w of this.waiting.splice(0)) w.command === 'quit' ? w.resolve({}) : w.reject(e);
  }

  private onData(d: Buffer): void {
    this.buf += d.toString('utf8');
    if (this.buf.length > 1 << 20) {
      this.sock.destroy();
      this.fail(new BangerError(ErrorCode.Vmm, `QMP on ${this.path}: a line past 1 MiB`));
      return;
    }
    let i: number;
    while ((i = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, i).trim();
      this.buf = this.buf.slice(i + 1);
      if (!line) continue;
      let msg: { QMP?: unknown; return?: unknown; error?: { desc?: string }; event?: string };
      try {
        msg = JSON.parse(line);
      } catch (e) {
        this.sock.destroy();
        this.fail(new BangerError(ErrorCode.Vmm, `QMP on ${this.path}: invalid JSON from QEMU`, { cause: e }));
        return;
      }
      if (msg.event) continue;
      const w = this.waiting.shift();
      if (!w) continue;
      if (msg.error) w.reject(new BangerError(ErrorCode.Vmm, `QMP ${w.command}: ${msg.error.desc ?? 'error'}`));
      else w.resolve(msg.QMP ? {} : msg.return);
    }
  }
}
