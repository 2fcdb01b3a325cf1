import type { VmHandle, VmmDriver } from './drivers/types.js';

/**
 * Client of the guest agent over the driver's agent stream (`openAgentStream`).
 * Protocol: newline-delimited JSON; `{"op":"health"}` → `{"ok":true,...}`,
 * `{"op":"ports"}` → `{"ok":true,"ports":[{proto,port,address}]}`.
 * Resolves undefined when nothing answers in time (an image without the agent): callers
 * skip agent checks then, never fail.
 */
export async function agentRequest(driver: Pick<VmmDriver, 'openAgentStream'>, vm: VmHandle, op: string, timeoutMs = 3000): Promise<Record<string, unknown> | undefined> {
  const t0 = Date.now();
  // A QEMU channel exists once the VMM runs: a missing socket here means no agent, not "wait".
  const sock = await driver.openAgentStream(vm, { timeoutMs: Math.min(timeoutMs, 1000) }).catch(() => undefined);
  if (!sock) return undefined;
  return new Promise((resolve) => {
    let buf = '';
    const done = (v: Record<string, unknown> | undefined) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(v);
    };
    const timer = setTimeout(() => done(undefined), Math.max(0, timeoutMs - (Date.now() - t0)));
    sock.on('error', () => done(undefined));
    sock.on('close', () => done(undefined));
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
    sock.write(JSON.stringify({ op }) + '\n');
  });
}
