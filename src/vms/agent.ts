import { connect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { BangerError, ErrorCode } from '../core/errors.js';
import { nullLogger, type Logger } from '../core/log.js';
import { AgentConnection } from './agent-session.js';
import { syncGuestClock } from './agent-clock.js';
import type { VmHandle, VmmDriver } from './drivers/types.js';

/**
 * The daemon's agent connections, one per channel key (the VM), opened on first use and
 * dropped when they close, so every request and session to one VM shares the single host
 * client of its channel. A connection that closed (the agent broke the protocol, the guest
 * rebooted) is replaced by a new one on the next request.
 */
export class AgentPool {
  private readonly conns = new Map<string, { p: Promise<AgentConnection>; conn?: AgentConnection }>();
  /** Where connections log why they closed (the daemon sets its logger: setAgentLog). */
  log: Logger = nullLogger;

  get(key: string, connect: () => Promise<Duplex>, timeoutMs: number): Promise<AgentConnection> {
    const have = this.conns.get(key);
    if (have && !have.conn?.closed) return have.p;
    const p = (async () => {
      const sock = await connect();
      return AgentConnection.open(sock, `agent ${key}`, timeoutMs, this.log);
    })();
    const entry: { p: Promise<AgentConnection>; conn?: AgentConnection } = { p };
    this.conns.set(key, entry);
    const drop = () => this.conns.get(key) === entry && this.conns.delete(key);
    p.then((c) => {
      entry.conn = c;
      c.onClose(drop);
    }, drop);
    return p;
  }

  /** Closes every connection (daemon shutdown). */
  closeAll(): void {
    for (const { p } of this.conns.values())
      p.then(
        (c) => c.close(),
        () => {},
      );
    this.conns.clear();
  }
}

/** The daemon's agent connections (one per VM; see AgentPool). */
export const agentPool = new AgentPool();

/** The daemon's logger for agent connections (why one closed: a guest that broke the protocol). */
export function setAgentLog(log: Logger): void {
  agentPool.log = log;
}

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
 * session to that VM. Rejects (E_TIMEOUT, E_AGENT) when no v2 agent answers in time. Each
 * contact also keeps the guest's wall clock on the host's (agent-clock.ts; never fails).
 */
export async function agentConnection(driver: Pick<VmmDriver, 'openAgentStream'>, vm: VmHandle, timeoutMs = 5000): Promise<AgentConnection> {
  const c = await agentPool.get(`${vm.name}#${vm.id}`, () => driver.openAgentStream(vm, { timeoutMs: Math.min(timeoutMs, 1000) }), timeoutMs);
  syncGuestClock(c, agentPool.log);
  return c;
}

/**
 * One request (`health`, `ports`) to the guest agent over the VM's shared protocol v2
 * connection. Resolves undefined when nothing answers in time (an image without the agent, or
 * with the version 1 agent): callers skip agent checks then, never fail.
 */
export async function agentRequest(
  driver: Pick<VmmDriver, 'openAgentStream'>,
  vm: VmHandle,
  op: string,
  timeoutMs = 3000,
): Promise<Record<string, unknown> | undefined> {
  try {
    const c = await agentConnection(driver, vm, timeoutMs);
    const r = await c.request({ op }, timeoutMs);
    return r.ok === true ? r : undefined;
  } catch {
    return undefined;
  }
}
