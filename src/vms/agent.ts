import { connect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { BangerError, ErrorCode } from '../core/errors.js';
import { AgentPool, type AgentConnection } from './agent-session.js';

/** The daemon's agent connections (one per VM channel; see AgentPool). */
export const agentPool = new AgentPool();

/** Connects a Unix socket (the QEMU virtio-serial chardev of a VM). */
export function connectUnix(path: string): Promise<Duplex> {
  return new Promise((resolve, reject) => {
    const sock: Socket = connect(path);
    sock.once('connect', () => {
      sock.removeAllListeners('error');
      resolve(sock);
    });
    sock.once('error', (e) => reject(new BangerError(ErrorCode.Agent, `cannot reach the guest agent at ${path}: ${e.message}`, { cause: e })));
  });
}

/** The protocol v2 connection to the agent behind `socketPath`, opened on first use. */
export function agentConnection(socketPath: string, timeoutMs = 5000): Promise<AgentConnection> {
  return agentPool.get(socketPath, () => connectUnix(socketPath), timeoutMs);
}

/**
 * One request (`health`, `ports`) to the guest agent behind `socketPath`, over the VM's shared
 * protocol v2 connection. Resolves undefined when nothing answers in time (an image without
 * the agent, or with the version 1 agent): callers skip agent checks then, never fail.
 */
export async function agentRequest(socketPath: string, op: string, timeoutMs = 3000): Promise<Record<string, unknown> | undefined> {
  try {
    const c = await agentConnection(socketPath, timeoutMs);
    const r = await c.request({ op }, timeoutMs);
    return r.ok === true ? r : undefined;
  } catch {
    return undefined;
  }
}
