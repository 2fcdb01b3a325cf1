import { createServer, type Server, type Socket } from 'node:net';
import { F, FrameDecoder, MAX_PAYLOAD, PROTO_VERSION, WINDOW, encodeFrame, type Frame } from '../../src/core/agent-proto.js';

/**
 * A guest agent that lies: it speaks protocol v2 (src/guest/README.md, "Agent protocol v2";
 * the real one is src/guest/agent/mux.c) on a Unix socket, the way bangerd reaches a VM's
 * agent, and answers what the test script says. It does what the real agent does on the
 * wire (HELLO, REPLY to a request, STDOUT within the credit the host granted, EXIT after all
 * output, nothing more after CLOSE), so the daemon's real client and bridge carry whatever it
 * sends to the CLI.
 *
 * Requests: `health` → ok; `stat` → `script.stat(path)`; `tar-out` → `script.tarOut(path)`
 * (REPLY ok with a pid, the tar as STDOUT, optional STDERR, EXIT with `exit`, 0 by default);
 * anything else is refused with a REPLY error.
 */
export interface TarOutAnswer {
  tar: Buffer;
  exit?: number;
  stderr?: string;
  /** Send the tar, then nothing: no EXIT (a guest whose tar never ends). */
  hang?: boolean;
}
export interface HostileScript {
  stat?(path: string): Record<string, unknown>;
  tarOut?(path: string): TarOutAnswer;
}

interface Out {
  data: Buffer;
  credit: number;
  closed: boolean;
  pump: () => void;
}

export class HostileAgent {
  /** Every request received, in order (the JSON objects). */
  readonly requests: Array<Record<string, unknown>> = [];
  /** Streams the host abandoned with CLOSE (the real agent kills their process group). */
  readonly closed: number[] = [];
  private readonly sockets = new Set<Socket>();
  private constructor(
    private readonly server: Server,
    public script: HostileScript,
  ) {}

  static async listen(path: string, script: HostileScript): Promise<HostileAgent> {
    const server = createServer();
    const agent = new HostileAgent(server, script);
    server.on('connection', (s) => agent.serve(s));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => resolve());
    });
    return agent;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  private serve(sock: Socket): void {
    this.sockets.add(sock);
    sock.on('close', () => this.sockets.delete(sock));
    sock.on('error', () => {});
    const decoder = new FrameDecoder();
    const streams = new Map<number, Out>();
    let hello = false;
    const send = (type: number, stream: number, payload?: Buffer | string) => {
      if (!sock.destroyed) sock.write(encodeFrame(type, stream, payload));
    };
    const onFrame = (f: Frame) => {
      if (!hello) {
        if (f.type !== F.Hello) return sock.destroy();
        hello = true;
        return send(F.Hello, 0, JSON.stringify({ proto: PROTO_VERSION, agent: 'hostile-agent', version: '2' }));
      }
      if (f.type === F.Request) return this.request(f.stream, JSON.parse(f.payload.toString('utf8')) as Record<string, unknown>, send, streams);
      const out = streams.get(f.stream);
      if (!out) return;
      if (f.type === F.Credit && f.payload.length === 4) {
        out.credit += f.payload.readUInt32BE(0);
        out.pump();
      } else if (f.type === F.Close) {
        this.closed.push(f.stream);
        out.closed = true;
        streams.delete(f.stream);
      }
    };
    sock.on('data', (d: Buffer) => decoder.push(d, onFrame));
  }

  private request(
    id: number,
    req: Record<string, unknown>,
    send: (type: number, stream: number, payload?: Buffer | string) => void,
    streams: Map<number, Out>,
  ): void {
    this.requests.push(req);
    const path = String(req.path ?? '');
    if (req.op === 'health') return send(F.Reply, id, JSON.stringify({ ok: true }));
    if (req.op === 'stat' && this.script.stat) return send(F.Reply, id, JSON.stringify({ ok: true, ...this.script.stat(path) }));
    if (req.op !== 'tar-out' || !this.script.tarOut)
      return send(F.Reply, id, JSON.stringify({ ok: false, error: `hostile agent: no answer for '${String(req.op)}'` }));
    const answer = this.script.tarOut(path);
    send(F.Reply, id, JSON.stringify({ ok: true, pid: 4242 }));
    let off = 0;
    const out: Out = {
      data: answer.tar,
      credit: WINDOW,
      closed: false,
      pump: () => {
        while (!out.closed && off < out.data.length && out.credit > 0) {
          const n = Math.min(MAX_PAYLOAD, out.credit, out.data.length - off);
          send(F.Stdout, id, out.data.subarray(off, off + n));
          off += n;
          out.credit -= n;
        }
        if (!out.closed && off >= out.data.length && !answer.hang) {
          out.closed = true;
          streams.delete(id);
          if (answer.stderr) send(F.Stderr, id, answer.stderr);
          send(F.Exit, id, JSON.stringify({ code: answer.exit ?? 0 }));
        }
      },
    };
    streams.set(id, out);
    out.pump();
  }
}
