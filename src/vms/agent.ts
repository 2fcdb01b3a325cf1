import { connect } from 'node:net';

/**
 * Client of the guest agent over its channel (QEMU: virtio-serial bound to a Unix socket).
 * Protocol: newline-delimited JSON; `{"op":"health"}` → `{"ok":true,...}`,
 * `{"op":"ports"}` → `{"ok":true,"ports":[{proto,port,address}]}`.
 * Resolves undefined when nothing answers in time (an image without the agent): callers
 * skip agent checks then, never fail.
 */
export function agentRequest(socketPath: string, op: string, timeoutMs = 3000): Promise<Record<string, unknown> | undefined> {
  return new Promise((resolve) => {
    const sock = connect(socketPath);
    let buf = '';
    const done = (v: Record<string, unknown> | undefined) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(v);
    };
    const timer = setTimeout(() => done(undefined), timeoutMs);
    sock.on('error', () => done(undefined));
    sock.on('connect', () => sock.write(JSON.stringify({ op }) + '\n'));
    sock.on('data', (d) => {
      buf += d.toString('utf8');
      for (;;) {
        const i = buf.indexOf('\n');
        if (i < 0) break;
        const line = buf.slice(0, i).trim();
        buf = buf.slice(i + 1);
        if (!line) continue;
        try {
          const msg = JSON.parse(line) as Record<string, unknown>;
          if (typeof msg === 'object' && msg && 'ok' in msg) return done(msg);
        } catch {
          /* partial garbage from a previous session: keep reading */
        }
      }
    });
  });
}
