import type { Socket } from 'node:net';
import { BangerError, ErrorCode } from '../core/errors.js';
import { F, FrameDecoder, WINDOW, encodeFrame, errorFrame, type ExitInfo } from '../core/agent-proto.js';
import type { AgentConnection, AgentSession, SessionHandlers } from './agent-session.js';

/** The CLI side of an upgraded `vm.exec` / `vm.cpOut` / `vm.cpIn` connection uses stream 1. */
export const CLI_STREAM = 1;

/**
 * Starts a session on `conn` and returns `attach`, which bridges it to the CLI's upgraded
 * socket: agent output → CLI (credit returned to the agent only when the socket took the
 * bytes, so a slow CLI slows the guest process instead of growing memory); CLI stdin / eof /
 * signal / resize / close → agent (the socket is paused while the agent owes stdin credit).
 * The process group is killed when the CLI disconnects before the exit frame.
 */
export async function startBridged(conn: AgentConnection, req: Record<string, unknown>): Promise<(sock: Socket) => void> {
  let sock: Socket | undefined;
  const early: Buffer[] = [];
  let session: AgentSession | undefined;
  let earlyBytes = 0;
  let owed = 0;
  let waiting = false;
  let finished: Buffer | undefined;
  const end = (frame: Buffer) => {
    if (finished) return;
    finished = frame;
    if (sock) sock.end(frame);
  };
  // Every buffer here is capped by the agent's credit (the session drops a connection whose
  // agent sends past it): before the CLI attaches nothing is acknowledged, so `early` holds at
  // most WINDOW bytes; after, credit is returned only once the CLI socket drained, so its
  // queue holds at most WINDOW bytes beyond its high-water mark. The checks below hold the
  // caps even if that accounting were wrong: the session is closed instead of growing.
  const overflow = (what: string) => {
    session?.close();
    end(errorFrame(CLI_STREAM, `bangerd: ${what}; the command was abandoned`));
  };
  const out = (type: number, data: Buffer) => {
    if (finished) return;
    const frame = encodeFrame(type, CLI_STREAM, data);
    if (!sock) {
      if (earlyBytes + data.length > WINDOW) return overflow(`more than ${WINDOW} bytes of output arrived before the client attached`);
      early.push(frame);
      earlyBytes += data.length;
      return;
    }
    // Credit goes back to the agent only once the CLI socket took the bytes.
    if (!waiting && sock.write(frame)) return session?.consumed(data.length);
    if (owed + data.length > WINDOW) return overflow(`more than ${WINDOW} bytes of output are waiting for a client that does not read`);
    if (waiting) sock.write(frame);
    owed += data.length;
    if (!waiting) awaitDrain(sock);
  };
  const awaitDrain = (cli: Socket) => {
    waiting = true;
    cli.once('drain', () => {
      waiting = false;
      const n = owed;
      owed = 0;
      session?.consumed(n);
    });
  };
  const handlers: SessionHandlers = {
    onStdout: (d) => out(F.Stdout, d),
    onStderr: (d) => out(F.Stderr, d),
    onExit: (e: ExitInfo) => end(encodeFrame(F.Exit, CLI_STREAM, JSON.stringify(e))),
    onError: (e: BangerError) => end(errorFrame(CLI_STREAM, e.message)),
  };
  session = await conn.start(req, handlers);
  const s = session;
  if (finished) s.close(); // over a cap before the session was ours (no-op once it ended)
  // The server may refuse the upgrade (see RpcServer): a session nobody attaches is killed.
  const orphan = setTimeout(() => s.close(), 10_000);
  orphan.unref();
  return (cli: Socket) => {
    clearTimeout(orphan);
    sock = cli;
    let took = true;
    for (const f of early) took = cli.write(f) && took;
    early.length = 0;
    if (took) s.consumed(earlyBytes);
    else {
      owed = earlyBytes;
      awaitDrain(cli);
    }
    if (finished) {
      s.close(); // no-op once the session ended
      cli.end(finished);
      return;
    }
    const decoder = new FrameDecoder();
    let chain = Promise.resolve();
    cli.on('data', (d: Buffer) => {
      try {
        decoder.push(d, (f) => {
          if (f.stream !== CLI_STREAM) throw new BangerError(ErrorCode.Invalid, `stream ${f.stream}: only stream ${CLI_STREAM} exists here`);
          if (f.type === F.Stdin) {
            cli.pause();
            chain = chain.then(() => s.write(f.payload)).then(() => void cli.resume());
          } else if (f.type === F.Eof) chain = chain.then(() => s.eof());
          else if (f.type === F.Signal && f.payload.length === 1) s.signal(f.payload[0]!);
          else if (f.type === F.Resize && f.payload.length === 4) s.resize(f.payload.readUInt16BE(0), f.payload.readUInt16BE(2));
          else if (f.type === F.Close) s.close();
          else throw new BangerError(ErrorCode.Invalid, `unexpected frame type ${f.type} from the client`);
        });
      } catch (e) {
        s.close();
        end(errorFrame(CLI_STREAM, `bangerd: ${(e as Error).message}`));
      }
    });
    cli.on('close', () => s.close()); // no-op once the session ended
    cli.on('error', () => s.close());
  };
}
