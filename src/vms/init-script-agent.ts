import { BangerError, ErrorCode } from '../core/errors.js';
import type { ExitInfo } from '../core/agent-proto.js';
import type { AgentConnection, AgentSession } from './agent-session.js';
import { INIT_REMOTE, initScriptFailure } from './init-script.js';

/** Output kept for the error's last lines (the whole output is on the console). */
const KEEP_BYTES = 64 * 1024;

/**
 * Run `script` once as root through the guest agent's `exec` (protocol v2): the same guest
 * side as over SSH (INIT_REMOTE: stored 0700 under /run, stdin /dev/null, every line copied to
 * the console as `banger-init-script: …`, exit code kept), the script sent on the session's
 * stdin. Resolves with the last KEEP_BYTES of output; throws E_INIT_SCRIPT (exit code and last
 * lines; 128+N for signal N) when it fails, when it runs longer than `timeoutMs` or when the
 * agent connection breaks mid-script (it is not retried: it may have run), and E_CANCELLED on
 * `signal`. Ending early closes the session, which kills the script's process group.
 */
export async function runInitScriptOverAgent(conn: AgentConnection, script: Buffer, o: { timeoutMs: number; signal?: AbortSignal }): Promise<string> {
  let out = Buffer.alloc(0);
  let session: AgentSession | undefined;
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  let unacked = 0; // output that arrived before start() resolved with the session
  const keep = (d: Buffer) => {
    out = Buffer.concat([out, d]);
    if (out.length > KEEP_BYTES) out = out.subarray(out.length - KEEP_BYTES);
    if (session) session.consumed(d.length);
    else unacked += d.length;
  };
  try {
    const exit = await new Promise<ExitInfo>((resolve, reject) => {
      timer = setTimeout(
        () => (session?.close(), reject(initScriptFailure(124, out.toString('utf8'), `did not finish within ${Math.round(o.timeoutMs / 1000)} s (stopped)`))),
        o.timeoutMs,
      );
      onAbort = () => (session?.close(), reject(new BangerError(ErrorCode.Cancelled, 'cancelled during step init-script')));
      if (o.signal?.aborted) return onAbort();
      o.signal?.addEventListener('abort', onAbort, { once: true });
      conn
        .start(
          { op: 'exec', argv: ['/bin/sh', '-c', INIT_REMOTE] },
          {
            onStdout: keep,
            onStderr: keep,
            onExit: resolve,
            onError: (e) => reject(initScriptFailure(125, out.toString('utf8'), `could not finish: the agent connection broke (${e.message})`)),
          },
        )
        .then(async (s) => {
          session = s;
          s.consumed(unacked);
          await s.write(script);
          s.eof();
        })
        .catch((e: unknown) => reject(initScriptFailure(125, '', `could not be run through the agent (${e instanceof Error ? e.message : String(e)})`)));
    });
    const code = exit.signal ? 128 + exit.signal : exit.code;
    if (code !== 0) throw initScriptFailure(code, out.toString('utf8'));
    return out.toString('utf8');
  } finally {
    clearTimeout(timer);
    if (onAbort) o.signal?.removeEventListener('abort', onAbort);
  }
}
