import type { Duplex } from 'node:stream';
import { BangerError, ErrorCode, errorMessage } from '../core/errors.js';
import { F, FrameDecoder, FrameError, WINDOW, chunks, encodeFrame, guestText, u32, type ExitInfo, type Frame } from '../core/agent-proto.js';
import { nullLogger, type Logger } from '../core/log.js';

/** Bytes the daemon may have queued for an agent beyond its sessions' stdin windows. */
export const MAX_QUEUED_TO_AGENT = 1 << 20;
/** How long a session start (`exec`, `tar-*`) may wait for the agent's REPLY. */
export const START_TIMEOUT_MS = 120_000;

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
  /** Output bytes the agent may still send: WINDOW plus what the owner acknowledged. */
  private outAllowed = WINDOW;
  private waiters: Array<() => void> = [];
  ended = false;
  constructor(
    private readonly conn: AgentConnection,
    readonly id: number,
    readonly handlers: SessionHandlers,
  ) {}

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
    if (this.ended || n <= 0) return;
    this.outAllowed += n;
    this.conn.send(F.Credit, this.id, u32(n));
  }
  /**
   * @internal Counts `n` bytes of output against the window; false when the agent sent more
   * than it was granted (the connection is then dropped: a guest must not grow the daemon).
   */
  charge(n: number): boolean {
    this.outAllowed -= n;
    return this.outAllowed >= 0;
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
 *
 * The agent is the guest's: everything it sends is bounded. A frame out of range or malformed,
 * output past a session's credit, an ERROR frame, or an agent that stops reading what the
 * daemon sends closes this connection (logged with the reason), fails its requests and
 * sessions, and nothing else: the VM keeps running and the pool opens a new connection on the
 * next request.
 */
export class AgentConnection {
  private readonly decoder = new FrameDecoder();
  private readonly pending = new Map<number, Pending>();
  private readonly sessions = new Map<number, AgentSession>();
  private nextId = 1;
  private helloWaiter?: Pending;
  info: Record<string, unknown> = {};
  closed = false;
  /** Why the connection closed (set once, by the first failure). */
  closeReason?: string;
  private readonly closeListeners: Array<() => void> = [];

  private constructor(
    private readonly sock: Duplex,
    readonly label: string,
    private readonly log: Logger,
  ) {
    sock.on('data', (d: Buffer) => {
      if (this.closed) return;
      try {
        this.decoder.push(d, (f) => this.onFrame(f));
      } catch (e) {
        this.violation(e instanceof FrameError || e instanceof BangerError ? e.message : `frame handling failed: ${errorMessage(e)}`);
      }
    });
    sock.on('error', (e) => this.fail(new BangerError(ErrorCode.Agent, `${label}: agent channel failed: ${e.message}`), 'info'));
    sock.on('close', () => this.fail(new BangerError(ErrorCode.Agent, `${label}: agent channel closed`), 'info'));
  }

  /** Says hello on `sock`; rejects (and destroys the socket) when no v2 agent answers in time. */
  static async open(sock: Duplex, label: string, timeoutMs: number, log: Logger = nullLogger): Promise<AgentConnection> {
    const c = new AgentConnection(sock, label, log);
    const timer = setTimeout(
      () => c.fail(new BangerError(ErrorCode.Timeout, `${label}: the guest agent did not answer within ${timeoutMs} ms`), 'debug'),
      timeoutMs,
    );
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

  /** `fn` runs once when the connection closes (at once if it is closed already). */
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

  /**
   * Starts an exec / tar-out / tar-in session; rejects with E_AGENT when the agent refuses,
   * E_TIMEOUT when it does not answer within START_TIMEOUT_MS (the stream is then closed).
   */
  async start(req: Record<string, unknown>, handlers: SessionHandlers, timeoutMs = START_TIMEOUT_MS): Promise<AgentSession> {
    const id = this.allocId();
    let pend!: Pending;
    let timer: NodeJS.Timeout | undefined;
    const reply = await new Promise<Record<string, unknown>>((resolve, reject) => {
      pend = { resolve, reject, handlers };
      this.pending.set(id, pend);
      timer = setTimeout(() => {
        // A late REPLY that started the process gets CLOSE (its process group is killed).
        this.pending.set(id, { resolve: (v) => v.ok === true && this.send(F.Close, id), reject: () => {} });
        reject(new BangerError(ErrorCode.Timeout, `${this.label}: the agent did not start '${String(req.op)}' within ${timeoutMs} ms`));
      }, timeoutMs);
      this.send(F.Request, id, JSON.stringify(req));
    }).finally(() => clearTimeout(timer));
    if (reply.ok !== true) {
      this.sessions.delete(id);
      throw new BangerError(ErrorCode.Agent, `guest: ${guestText(String(reply.error ?? 'request refused'))}`, {
        details: { exitCode: typeof reply.code === 'number' ? reply.code : undefined },
      });
    }
    // The session may have ended already (its exit frame can follow the reply at once).
    return pend.session!;
  }

  close(): void {
    this.fail(new BangerError(ErrorCode.Agent, `${this.label}: agent connection closed`), 'debug');
  }

  /** @internal */
  send(type: number, stream: number, payload?: Buffer | string): void {
    if (this.closed) return;
    this.sock.write(encodeFrame(type, stream, payload));
    // What the agent has not read yet: its sessions' stdin windows (it grants credit only for
    // what it took) plus requests and credit frames. More means it stopped reading.
    const queued = (this.sock as Duplex & { writableLength?: number }).writableLength ?? 0;
    if (queued > MAX_QUEUED_TO_AGENT + this.sessions.size * WINDOW) this.violation(`the agent has not read ${queued} bytes the daemon sent it`);
  }
  /** @internal */
  forget(id: number): void {
    this.sessions.delete(id);
  }

  private allocId(): number {
    if (this.closed) throw new BangerError(ErrorCode.Agent, `${this.label}: agent connection closed${this.closeReason ? ` (${this.closeReason})` : ''}`);
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
    if (this.closed) return;
    if (f.type === F.Hello) {
      const w = this.helloWaiter;
      this.helloWaiter = undefined;
      w?.resolve(this.json(f));
      return;
    }
    if (f.type === F.Error) {
      this.violation(`the agent reported a protocol error: ${guestText(f.payload, 512)}`);
      return;
    }
    if (f.type === F.Reply) {
      const p = this.pending.get(f.stream);
      if (!p) return;
      const v = this.json(f); // invalid JSON fails the connection, and with it this request
      this.pending.delete(f.stream);
      if (p.handlers && v.ok === true) {
        p.session = new AgentSession(this, f.stream, p.handlers);
        this.sessions.set(f.stream, p.session);
      }
      p.resolve(v);
      return;
    }
    const s = this.sessions.get(f.stream);
    if (!s) return; // a late frame of a session we closed
    if (f.type === F.Stdout || f.type === F.Stderr) {
      if (!s.charge(f.payload.length)) {
        this.violation(`stream ${f.stream}: the agent sent output past the ${WINDOW}-byte credit window it was granted`);
        return;
      }
      if (f.type === F.Stdout) s.handlers.onStdout(f.payload);
      else s.handlers.onStderr(f.payload);
    } else if (f.type === F.Credit && f.payload.length === 4) s.granted(f.payload.readUInt32BE(0));
    else if (f.type === F.Exit) {
      const v = this.json(f);
      s.finish();
      s.handlers.onExit({ code: Number(v.code), signal: typeof v.signal === 'number' ? v.signal : undefined });
    } else throw new FrameError(`unexpected frame type ${f.type} from the agent`);
  }

  /** The agent broke the protocol: drop the connection and log why (warn: a guest's doing). */
  private violation(reason: string): void {
    this.fail(new BangerError(ErrorCode.Agent, `${this.label}: ${reason}; the connection to the agent was closed`), 'warn', reason);
  }

  /**
   * Closes the connection once: every pending request and every session is told, then every
   * close listener runs, whatever any of them throws. Never throws.
   */
  private fail(err: BangerError, level: 'debug' | 'info' | 'warn', reason = err.message): void {
    if (this.closed) return;
    this.closed = true;
    this.closeReason = reason;
    const guard = (what: string, fn: () => void) => {
      try {
        fn();
      } catch (e) {
        try {
          this.log.error('agent connection: a close step failed', { agent: this.label, step: what, error: errorMessage(e) });
        } catch {
          /* logging must not stop the others */
        }
      }
    };
    guard('log', () => this.log[level]('agent connection closed', { agent: this.label, reason, sessions: this.sessions.size, pending: this.pending.size }));
    guard('destroy', () => this.sock.destroy());
    const hello = this.helloWaiter;
    this.helloWaiter = undefined;
    if (hello) guard('hello', () => hello.reject(err));
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) guard('request', () => p.reject(err));
    const sessions = [...this.sessions.values()];
    this.sessions.clear();
    for (const s of sessions) {
      guard('session', () => s.finish());
      guard('session', () => s.handlers.onError(err));
    }
    for (const fn of this.closeListeners.splice(0)) guard('listener', fn);
  }
}
