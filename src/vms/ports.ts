import { BangerError, ErrorCode, errorMessage } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import { TcpForwarder } from '../network/forward.js';
import { formatPort, portKey, type PortSpec } from './publish-spec.js';
import type { VmRecord } from './store.js';

/**
 * Published ports (`vm create -p`): one TcpForwarder per port, run by the daemon in its own
 * network namespace, connecting to the guest's bridge address. Why a forwarder rather than
 * nftables DNAT: it needs no `--nat`, no `route_localnet` (DNAT of 127.0.0.1 is otherwise
 * dropped as martian), no firewall state to reconcile, and "port taken" is the kernel's own
 * EADDRINUSE at bind time, for any owner (another process, another VM).
 *
 * Lifecycle: `open` on create (before anything else is made) and on start; `close` on stop,
 * rm and a dead VMM; `open` again when the daemon restarts and adopts a running VM (the
 * listeners die with the daemon). All-or-nothing: a port that cannot be bound closes the
 * ones this call opened and throws E_IN_USE naming it.
 */
export class PortForwards {
  private readonly byVm = new Map<string, TcpForwarder[]>();

  constructor(private readonly log: Logger) {}

  /** Ports published by `vm`, or none. */
  static of(vm: Pick<VmRecord, 'spec'>): PortSpec[] {
    return (vm.spec as { ports?: PortSpec[] }).ports ?? [];
  }

  /**
   * Refuse a port another VM of this instance already publishes (even a stopped one: it gets
   * the port back when started), so a conflict is caught before anything is created.
   */
  static checkConflicts(name: string, ports: PortSpec[], others: VmRecord[]): void {
    for (const o of others) {
      if (o.name === name) continue;
      for (const q of PortForwards.of(o)) {
        const p = ports.find((x) => x.hostPort === q.hostPort && (x.hostIp === q.hostIp || isWildcard(x.hostIp) || isWildcard(q.hostIp)));
        if (p) throw new BangerError(ErrorCode.InUse, `host port ${portKey(p)} is already published by vm '${o.name}' (${formatPort(q)})`, { hint: 'pick another HOSTPORT for -p', details: { field: '-p', address: portKey(p), vm: o.name } });
      }
    }
  }

  /**
   * Listen on every port of `name`, forwarding to the guest address `guestIp()` gives when a
   * client connects (undefined: the client is closed). Idempotent for a VM already forwarded.
   */
  async open(name: string, ports: PortSpec[], guestIp: () => string | undefined): Promise<void> {
    if (!ports.length || this.byVm.has(name)) return;
    const opened: TcpForwarder[] = [];
    try {
      for (const p of ports) {
        const f = new TcpForwarder(() => { const host = guestIp(); return host ? { host, port: p.guestPort } : undefined; }, { onError: (e) => this.log.warn('port forwarder error', { vm: name, port: formatPort(p), error: errorMessage(e) }) });
        await f.listen(p.hostIp, p.hostPort);
        opened.push(f);
      }
    } catch (e) {
      await Promise.all(opened.map((f) => f.close()));
      throw e;
    }
    this.byVm.set(name, opened);
    this.log.info('published ports', { vm: name, ports: ports.map(formatPort) });
  }

  /** Stop forwarding `name`'s ports (live connections are closed). Idempotent. */
  async close(name: string): Promise<void> {
    const fs = this.byVm.get(name);
    this.byVm.delete(name);
    if (fs) await Promise.all(fs.map((f) => f.close()));
  }

  /** Is `name` forwarded right now (for `vm show`). */
  active(name: string): boolean {
    return this.byVm.has(name);
  }

  async closeAll(): Promise<void> {
    await Promise.all([...this.byVm.keys()].map((n) => this.close(n)));
  }
}

function isWildcard(ip: string): boolean {
  return ip === '0.0.0.0' || ip === '::';
}
