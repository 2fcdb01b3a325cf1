import type { Duplex } from 'node:stream';
import { BangerError, ErrorCode } from '../core/errors.js';
import { F, FrameDecoder, FrameError, WINDOW, chunks, encodeFrame, u32, type ExitInfo, type Frame } from '../core/agent-proto.js';

/** What a session reports. Output must be acknowledged with `AgentSession.consumed(n)`. */
export interface SessionHandlers {
  onStdout(data: Buffer): void;
  onStderr(data: Buffer): void;
  /** Called once: the process exited (all its output was delivered before). */
  onExit(exit: ExitInfo): void;
  /** Called once instead of onExit when the connection to the agent broke. */
  onError(err: BangerError): void;
}

/**
 * One exec / tar session on an agent connection. Flow control both ways: `write` resolves
 * only when the agent granted credit for the bytes; output keeps coming only while the owner
 * acknowledges it with `consumed`.
 */
export class AgentSession {
  private credit = WINDOW;
  private waiters: Array<() => void> = [];
  ended = false;
  constructor(private readonly conn: AgentConnection, readonly id: number, readonly handlers: SessionHandlers) {}

  async write(data: Buffer): Promise<void> {
    for (const part of chunks(data)) {
      let off = 0;
      while (off < part.length) {
        if (this.ended) return;
        if (this.credit <= 0) {
          await new Promise<void>((r) => this.waiters.push(r));
          continue;
        }
        const n = Math.min(this.credit, part.length - off);
        this.credit -= n;
        this.conn.send(F.Stdin, this.id, part.subarray(off, off + n));
        off += n;
      }
    }
  }
  eof(): void {
    if (!this.ended) this.conn.send(F.Eof, this.id);
  }
  signal(signo: number): void {
    if (!this.ended) this.conn.send(F.Signal, this.id, Buffer.from([signo]));
  }
  resize(rows: number, cols: number): void {
    if (!this.ended) {
      const b = Buffer.alloc(4);
      b.writeUInt16BE(rows & 0xffff, 0);
      b.writeUInt16BE(cols & 0xffff, 2);
      this.conn.send(F.Resize, this.id, b);
    }
  }
  /** The owner has taken `n` bytes of output: the agent may send that much more. */
  consumed(n: number): void {
    if (!this.ended && n > 0) this.conn.send(F.Credit, this.id, u32(n));
  }
  /** Abandon the session: the agent kills the process group. Idempotent. */
  close(): void {
    if (this.ended) return;
    this.conn.send(F.Close, this.id);
    this.finish();
  }
  /** @internal */
  granted(n: number): void {
    this.credit += n;
    const w = this.waiters;
    this.waiters = [];
    for (const r of w) r();
  }
  /** @internal */
  finish(): void {
    this.ended = true;
    this.granted(0);
    this.conn.forget(this.id);
  }
}

type Pending = { resolve: (v: Record<string, unknown>) => void; reject: (e: BangerError) => void; handlers?: SessionHandlers; session?: AgentSession };

/**
 * One protocol v2 connection to a guest agent (the daemon holds one per VM: virtio-serial has
 * a single host client). Requests and sessions are multiplexed over it by stream id.
 */
export class AgentConnection {
  private readonly decoder = new FrameDecoder();
  private readonly pending = new Map<number, Pending>();
  private readonly sessions = new Map<number, AgentSession>();
  private nextId = 1;
  private helloWaiter?: Pending;
  info: Record<string, unknown> = {};
  closed = false;
  private readonly closeListeners: Array<() => void> = [];

  private constructor(private readonly sock: Duplex, readonly label: string) {
    sock.on('data', (d: Buffer) => {
      try {
        this.decoder.push(d, (f) => this.onFrame(f));
      } catch (e) {
        this.fail(new BangerError(ErrorCode.Agent, `${label}: ${e instanceof FrameError ? e.message : String(e)}`));
      }
    });
    sock.on('error', (e) => this.fail(new BangerError(ErrorCode.Agent, `${label}: agent channel failed: ${e.message}`)));
    sock.on('close', () => this.fail(new BangerError(ErrorCode.Agent, `${label}: agent channel closed`)));
  }

  /** Says hello on `sock`; rejects (and destroys the socket) when no v2 agent answers in time. */
  static async open(sock: Duplex, label: string, timeoutMs: number): Promise<AgentConnection> {
    const c = new AgentConnection(sock, label);
    const timer = setTimeout(() => c.fail(new BangerError(ErrorCode.Timeout, `${label}: the guest agent did not answer within ${timeoutMs} ms`)), timeoutMs);
    try {
      c.info = await new Promise<Record<string, unknown>>((resolve, reject) => {
        c.helloWaiter = { resolve, reject };
        c.send(F.Hello, 0, JSON.stringify({ proto: 2, client: 'bangerd' }));
      });
    } finally {
      clearTimeout(timer);
    }
    return c;
  }

  onClose(fn: () => void): void {
    if (this.closed) fn();
    else this.closeListeners.push(fn);
  }

  /** A one-shot request (health, ports, stat): resolves with the agent's reply object. */
  request(req: Record<string, unknown>, timeoutMs = 10_000): Promise<Record<string, unknown>> {
    const id = this.allocId();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new BangerError(ErrorCode.Timeout, `${this.label}: no reply to '${String(req.op)}' within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, {
        resolve: (v) => (clearTimeout(timer), resolve(v)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      });
      this.send(F.Request, id, JSON.stringify(req));
    });
  }

  /** Starts an exec / tar-out / tar-in session; rejects with E_AGENT when the agent refuses. */
  async start(req: Record<string, unknown>, handlers: SessionHandlers): Promise<AgentSession> {
    const id = this.allocId();
    let pend!: Pending;
    const reply = await new Promise<Record<string, unknown>>((resolve, reject) => {
      pend = { resolve, reject, handlers };
      this.pending.set(id, pend);
      this.send(F.Request, id, JSON.stringify(req));
    });
    if (reply.ok !== true) {
      this.sessions.delete(id);
      throw new BangerError(ErrorCode.Agent, `guest: ${String(reply.error ?? 'request refused')}`, { details: { exitCode: typeof reply.code === 'number' ? reply.code : undefined } });
    }
    // The session may have ended already (its exit frame can follow the reply at once).
    return pend.session!;
  }

  close(): void {
    this.sock.destroy();
    this.fail(new BangerError(ErrorCode.Agent, `${this.label}: agent connection closed`));
  }

  /** @internal */
  send(type: number, stream: number, payload?: Buffer | string): void {
    if (!this.closed) this.sock.write(encodeFrame(type, stream, payload));
  }
  /** @internal */
  forget(id: number): void {
    this.sessions.delete(id);
  }

  private allocId(): number {
    if (this.closed) throw new BangerError(ErrorCode.Agent, `${this.label}: agent connection closed`);
    const id = this.nextId;
    this.nextId = this.nextId >= 0x7fffffff ? 1 : this.nextId + 1;
    return id;
  }

  private json(f: Frame): Record<string, unknown> {
    try {
      const v = JSON.parse(f.payload.toString('utf8'));
      if (v && typeof v === 'object') return v as Record<string, unknown>;
    } catch {
      /* fall through */
    }
    throw new FrameError(`frame type ${f.type} on stream ${f.stream} carries invalid JSON`);
  }

  private onFrame(f: Frame): void {
    if (f.type === F.Hello) {
      const w = this.helloWaiter;
      this.helloWaiter = undefined;
      w?.resolve(this.json(f));
      return;
    }
    if (f.type === F.Error) {
      this.fail(new BangerError(ErrorCode.Agent, `${this.label}: the agent reported a protocol error: ${f.payload.toString('utf8')}`));
      this.sock.destroy();
      return;
    }
    if (f.type === F.Reply) {
      const p = this.pending.get(f.stream);
      if (!p) return;
      this.pending.delete(f.stream);
      const v = this.json(f);
      if (p.handlers && v.ok === true) {
        p.session = new AgentSession(this, f.stream, p.handlers);
        this.sessions.set(f.stream, p.session);
      }
      p.resolve(v);
      return;
    }
    const s = this.sessions.get(f.stream);
    if (!s) return; // a late frame of a session we closed
    if (f.type === F.Stdout) s.handlers.onStdout(f.payload);
    else if (f.type === F.Stderr) s.handlers.onStderr(f.payload);
    else if (f.type === F.Credit && f.payload.length === 4) s.granted(f.payload.readUInt32BE(0));
    else if (f.type === F.Exit) {
      const v = this.json(f);
      s.finish();
      s.handlers.onExit({ code: Number(v.code), signal: typeof v.signal === 'number' ? v.signal : undefined });
    } else throw new FrameError(`unexpected frame type ${f.type} from the agent`);
  }

  private fail(err: BangerError): void {
    if (this.closed) return;
    this.closed = true;
    this.sock.destroy();
    this.helloWaiter?.reject(err);
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    for (const s of this.sessions.values()) {
      s.finish();
      s.handlers.onError(err);
    }
    this.sessions.clear();
    for (const fn of this.closeListeners.splice(0)) fn();
  }
}

/**
 * The daemon's agent connections, one per channel key (the VM's agent socket path), opened on
 * first use and dropped when they close, so every request and session to one VM shares the
 * single host client of its channel.
 */
export class AgentPool {
  private readonly conns = new Map<string, Promise<AgentConnection>>();

  get(key: string, connect: () => Promise<Duplex>, timeoutMs: number): Promise<AgentConnection> {
    const have = this.conns.get(key);
    if (have) return have;
    const p = (async () => {
      const sock = await connect();
      return AgentConnection.open(sock, `agent ${key}`, timeoutMs);
    })();
    this.conns.set(key, p);
    p.then(
      (c) => c.onClose(() => this.conns.get(key) === p && this.conns.delete(key)),
      () => this.conns.get(key) === p && this.conns.delete(key),
    );
    return p;
  }

  /** Closes every connection (daemon shutdown). */
  closeAll(): void {
    for (const p of this.conns.values()) p.then((c) => c.close(), () => {});
    this.conns.clear();
  }
}
