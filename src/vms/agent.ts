import { connect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { BangerError, ErrorCode } from '../core/errors.js';
import { AgentPool, type AgentConnection } from './agent-session.js';
import type { VmHandle, VmmDriver } from './drivers/types.js';

/** The daemon's agent connections (one per VM; see AgentPool). */
export const agentPool = new AgentPool();

/** Connects a Unix socket (tests; the drivers' `openAgentStream` is the daemon's way). */
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

/**
 * The protocol v2 connection to `vm`'s agent, opened through the driver's agent stream
 * (QEMU virtio-serial, Firecracker hybrid vsock) on first use and shared by every request and
 * session to that VM. Rejects (E_TIMEOUT, E_AGENT) when no v2 agent answers in time.
 */
export function agentConnection(driver: Pick<VmmDriver, 'openAgentStream'>, vm: VmHandle, timeoutMs = 5000): Promise<AgentConnection> {
  return agentPool.get(`${vm.name}#${vm.id}`, () => driver.openAgentStream(vm, { timeoutMs: Math.min(timeoutMs, 1000) }), timeoutMs);
}

/**
 * One request (`health`, `ports`) to the guest agent over the VM's shared protocol v2
 * connection. Resolves undefined when nothing answers in time (an image without the agent, or
 * with the version 1 agent): callers skip agent checks then, never fail.
 */
export async function agentRequest(driver: Pick<VmmDriver, 'openAgentStream'>, vm: VmHandle, op: string, timeoutMs = 3000): Promise<Record<string, unknown> | undefined> {
  try {
    const c = await agentConnection(driver, vm, timeoutMs);
    const r = await c.request({ op }, timeoutMs);
    return r.ok === true ? r : undefined;
  } catch {
    return undefined;
  }
}
