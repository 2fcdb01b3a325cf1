import { EventEmitter, once } from 'node:events';
import { createServer, type Server, type Socket } from 'node:net';
import { rmSync } from 'node:fs';
import { F, FrameDecoder, FRAME_HDR, MAX_PAYLOAD, encodeFrame, type Frame } from '../../src/core/agent-proto.js';

/**
 * A guest agent peer speaking protocol v2 on a Unix socket, well or badly, for tests of the
 * daemon's agent client (src/vms/agent-session.ts) through its real vm.* handlers. It answers
 * HELLO and `health`; an `exec` request chooses the behaviour by its argv[0]:
 *
 *   - `echo ARGS…`: prints ARGS (respecting credit) and exits 0: a good session;
 *   - `hang`: prints `ready`, then never exits; SIGNAL frames are recorded (`signals`) and
 *     ignored; only CLOSE (or the connection going) ends it;
 *   - `flood`: ignores flow-control credit and writes 64 KiB STDOUT frames as fast as the
 *     socket takes them, until the connection closes (`floodBytes` counts what it wrote);
 *   - `error-ffff`: REPLY ok, then an ERROR frame of 65,536 0xFF bytes (invalid UTF-8);
 *   - `oversized`: REPLY ok, then a frame header announcing more than MAX_PAYLOAD bytes;
 *   - `truncated`: REPLY ok, then half a STDOUT frame, then the connection is closed;
 *   - `bad-json`: a REPLY whose payload is not JSON.
 *
 * Every connection starts fresh, so after a broken one the next connection serves good
 * sessions again. Events: `connection` (count), `signal` (signo), `closed` (connection index).
 */
export class HostileAgentPeer extends EventEmitter {
  private server?: Server;
  private readonly socks = new Set<Socket>();
  connections = 0;
  signals: number[] = [];
  floodBytes = 0;
  /** Requests seen, in order (op and argv[0]); `setClock` requests are answered as `answerSetClock` says. */
  requests: Array<Record<string, unknown>> = [];
  /** How `set-clock` is answered: as an agent that knows it, or as an older one ('unknown op'). */
  answerSetClock: 'ok' | 'unknown' = 'unknown';

  private constructor(readonly path: string) {
    super();
  }

  static async start(path: string): Promise<HostileAgentPeer> {
    const p = new HostileAgentPeer(path);
    rmSync(path, { force: true });
    p.server = createServer((s) => p.serve(s));
    p.server.listen(path);
    await once(p.server, 'listening');
    return p;
  }

  async close(): Promise<void> {
    for (const s of this.socks) s.destroy();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
    rmSync(this.path, { force: true });
  }

  private serve(sock: Socket): void {
    const index = ++this.connections;
    this.socks.add(sock);
    this.emit('connection', index);
    const decoder = new FrameDecoder();
    const credit = new Map<number, number>();
    const live = new Set<number>();
    let open = true;
    sock.on('error', () => {});
    sock.on('close', () => {
      open = false;
      this.socks.delete(sock);
      this.emit('closed', index);
    });
    const send = (type: number, stream: number, payload?: Buffer | string) => open && sock.write(encodeFrame(type, stream, payload));
    const json = (f: Frame) => JSON.parse(f.payload.toString('utf8')) as Record<string, unknown>;

    const flood = async (id: number) => {
      const chunk = Buffer.alloc(MAX_PAYLOAD, 0x61);
      while (open && live.has(id)) {
        const ok = sock.write(encodeFrame(F.Stdout, id, chunk));
        this.floodBytes += chunk.length;
        if (!ok) await new Promise((r) => (sock.once('drain', r), sock.once('close', r)));
      }
    };
    const exec = (id: number, argv: string[]) => {
      const cmd = argv[0];
      if (cmd === 'bad-json') return send(F.Reply, id, '{"ok":tru');
      send(F.Reply, id, JSON.stringify({ ok: true, pid: 4242 }));
      live.add(id);
      credit.set(id, 262144);
      if (cmd === 'flood') return void flood(id);
      if (cmd === 'error-ffff') return send(F.Error, 0, Buffer.alloc(65536, 0xff));
      if (cmd === 'oversized') {
        const h = Buffer.alloc(FRAME_HDR);
        h.writeUInt32BE(5 + MAX_PAYLOAD + 1, 0);
        h[4] = F.Stdout;
        h.writeUInt32BE(id, 5);
        return sock.write(h);
      }
      if (cmd === 'truncated') {
        const whole = encodeFrame(F.Stdout, id, Buffer.alloc(1000, 0x62));
        sock.end(whole.subarray(0, 500));
        return;
      }
      if (cmd === 'hang') return send(F.Stdout, id, 'ready\n');
      const text = Buffer.from(argv.slice(1).join(' ') + '\n');
      if (text.length > credit.get(id)!) throw new Error('echo: output larger than the window');
      send(F.Stdout, id, text);
      send(F.Exit, id, JSON.stringify({ code: 0 }));
      live.delete(id);
    };

    sock.on('data', (d: Buffer) => {
      try {
        decoder.push(d, (f) => {
          if (f.type === F.Hello) return send(F.Hello, 0, JSON.stringify({ proto: 2, agent: 'hostile-agent-peer', version: '2' }));
          if (f.type === F.Request) {
            const req = json(f);
            this.requests.push(req);
            if (req.op === 'health') return send(F.Reply, f.stream, JSON.stringify({ ok: true, agent: 'hostile-agent-peer', version: '2', proto: 2 }));
            if (req.op === 'set-clock') {
              if (this.answerSetClock === 'ok') return send(F.Reply, f.stream, JSON.stringify({ ok: true, stepMs: 0 }));
              return send(F.Reply, f.stream, JSON.stringify({ ok: false, error: 'unknown op' }));
            }
            if (req.op === 'exec') return exec(f.stream, (req.argv as string[]) ?? []);
            return send(F.Reply, f.stream, JSON.stringify({ ok: false, error: 'unknown op' }));
          }
          if (f.type === F.Credit) credit.set(f.stream, (credit.get(f.stream) ?? 0) + f.payload.readUInt32BE(0));
          else if (f.type === F.Signal) {
            this.signals.push(f.payload[0]!);
            this.emit('signal', f.payload[0]);
          } else if (f.type === F.Close) {
            live.delete(f.stream);
            this.emit('close-stream', f.stream);
          }
        });
      } catch {
        sock.destroy();
      }
    });
  }
}
