import { connect, type Socket } from 'node:net';
import { randomBytes } from 'node:crypto';

/** A raw NDJSON connection for tests that send what no well-behaved client would. */
export class RawConn {
  readonly lines: any[] = [];
  closed = false;
  private buf = '';
  private waiters: (() => void)[] = [];
  private constructor(readonly sock: Socket) {
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      this.buf += d;
      let i: number;
      while ((i = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, i);
        this.buf = this.buf.slice(i + 1);
        this.lines.push(JSON.parse(line));
      }
      this.wake();
    });
    sock.on('close', () => {
      this.closed = true;
      this.wake();
    });
    sock.on('error', () => {});
  }

  static open(path: string): Promise<RawConn> {
    return new Promise((resolve, reject) => {
      const s = connect(path);
      s.once('connect', () => resolve(new RawConn(s)));
      s.once('error', reject);
    });
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  send(text: string): void {
    this.sock.write(text);
  }

  /** Wait until `pred` holds (checked on every incoming line and on close). */
  async until(pred: () => boolean, timeoutMs = 10000, what = 'condition'): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!pred()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; got ${this.lines.length} lines, closed=${this.closed}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, 50);
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  /** Send one line and wait for the reply with that id (or the next reply when id is null). */
  async request(line: string, id: unknown, timeoutMs = 10000): Promise<any> {
    const start = this.lines.length;
    this.send(line + '\n');
    let found: any;
    await this.until(() => (found = this.lines.slice(start).find((l) => l.id === id && !l.method)) !== undefined, timeoutMs, `reply to ${line.slice(0, 60)}`);
    return found;
  }

  close(): void {
    this.sock.destroy();
  }
}

/** The messages that stopped bangerd before issue 14, one per line (no newline inside). */
export function killerMessages(): { name: string; line: string }[] {
  const deep = '['.repeat(5000) + ']'.repeat(5000);
  const out = [
    { name: 'null', line: 'null' },
    { name: 'number', line: '42' },
    { name: 'string', line: '"hello"' },
    { name: 'array', line: '[1,2]' },
    { name: 'empty batch', line: '[]' },
    { name: 'true', line: 'true' },
    { name: 'deep id', line: `{"jsonrpc":"2.0","id":${deep},"method":"daemon.status"}` },
    { name: 'object id', line: '{"jsonrpc":"2.0","id":{"a":1},"method":"daemon.status"}' },
    { name: 'deep params', line: `{"jsonrpc":"2.0","id":7,"method":"daemon.status","params":${deep}}` },
    { name: 'null params on cancel', line: '{"jsonrpc":"2.0","method":"$/cancel","params":null}' },
    { name: 'proto params', line: '{"jsonrpc":"2.0","id":8,"method":"daemon.status","params":{"__proto__":{"polluted":1}}}' },
  ];
  for (const m of ['constructor', 'toString', 'valueOf', 'hasOwnProperty', '__proto__', 'isPrototypeOf', '__defineGetter__']) {
    out.push({ name: `method ${m}`, line: JSON.stringify({ jsonrpc: '2.0', id: `k-${m}`, method: m, params: {} }) });
  }
  return out;
}

/** Deterministic pseudo-random generator (xorshift32), so a failing case can be replayed by seed. */
export function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 0x100000000;
  };
}

/** `n` generated malformed or odd request lines (no '\n' inside any of them). */
export function fuzzLines(n: number, seed = 1): string[] {
  const r = rng(seed);
  const pick = <T>(xs: T[]): T => xs[Math.floor(r() * xs.length)]!;
  const values = (): unknown =>
    pick<() => unknown>([
      () => null,
      () => true,
      () => Math.floor(r() * 1e9) - 5e8,
      () => r() * 1e300,
      () => -0,
      () => '',
      () => 'x'.repeat(Math.floor(r() * 300)),
      () => randomBytes(8).toString('hex'),
      () => [],
      () => ({}),
      () => [values(), values()],
      () => ({ a: values(), __proto__x: 1 }),
      () => pick(['constructor', 'toString', '__proto__', 'prototype', 'daemon.status', '$/cancel', '$/progress', 'vm.list', 'kernel.list']),
    ])();
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const kind = Math.floor(r() * 6);
    let line: string;
    if (kind === 0) {
      // raw bytes (no newline), possibly invalid UTF-8
      line = randomBytes(1 + Math.floor(r() * 200)).toString('latin1');
    } else if (kind === 1) {
      // a request cut short
      const full = JSON.stringify({ jsonrpc: '2.0', id: i, method: 'daemon.status', params: {} });
      line = full.slice(0, Math.floor(r() * full.length));
    } else if (kind === 2) {
      line = JSON.stringify(values());
    } else {
      // a request object with random fields
      const msg: Record<string, unknown> = {};
      if (r() < 0.8) msg.jsonrpc = r() < 0.7 ? '2.0' : values();
      if (r() < 0.9) msg.id = r() < 0.5 ? `f${i}` : values();
      if (r() < 0.95) msg.method = r() < 0.5 ? pick(['daemon.status', 'vm.list', 'kernel.list', 'image.list', 'vm.show', '$/cancel']) : values();
      if (r() < 0.7) msg.params = values();
      line = JSON.stringify(msg);
    }
    out.push(line.replace(/[\n\r]/g, ' '));
  }
  return out;
}
