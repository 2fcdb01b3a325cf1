import { BangerError, ErrorCode, errorMessage } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import { TcpForwarder } from '../network/forward.js';
import { formatPort, portKey, type PortSpec } from './publish-spec.js';
import type { PortLimits, VmRecord } from './store.js';

/** Used for a VM whose record has no limits (made before they existed) and when config has none. */
export const DEFAULT_PORT_LIMITS: PortLimits = { maxConnections: 256, idleTimeoutSeconds: 600 };

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
 *
 * Limits (`PortLimits`, stored in the VM's spec so start and adopt reopen with the same ones):
 * each port accepts at most `maxConnections` clients at once (the next is closed at once; one
 * warning per burst of refusals, one line with the count when it ends) and a connection idle
 * for `idleTimeoutSeconds` (0: never) is closed on both sides. A VM made before limits existed
 * gets `defaults` (config `ports`).
 */
export class PortForwards {
  private readonly byVm = new Map<string, TcpForwarder[]>();

  constructor(
    private readonly log: Logger,
    private readonly defaults: PortLimits = DEFAULT_PORT_LIMITS,
  ) {}

  /**
   * The limits a new VM stores: the create flags, else config `ports`. E_INVALID when a limit
   * is given without any `-p` (it would limit nothing).
   */
  static limitsFor(p: { portMaxConnections?: number; portIdleTimeoutSeconds?: number }, ports: PortSpec[], config: PortLimits): PortLimits | undefined {
    if (!ports.length) {
      const flag = p.portMaxConnections !== undefined ? '--port-max-conns' : p.portIdleTimeoutSeconds !== undefined ? '--port-idle-timeout' : undefined;
      if (flag)
        throw new BangerError(ErrorCode.Invalid, `${flag} limits published ports, and this VM publishes none`, {
          hint: 'add -p HOSTPORT:GUESTPORT, or drop the flag',
          details: { field: flag },
        });
      return undefined;
    }
    return { maxConnections: p.portMaxConnections ?? config.maxConnections, idleTimeoutSeconds: p.portIdleTimeoutSeconds ?? config.idleTimeoutSeconds };
  }

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
        if (p)
          throw new BangerError(ErrorCode.InUse, `host port ${portKey(p)} is already published by vm '${o.name}' (${formatPort(q)})`, {
            hint: 'pick another HOSTPORT for -p',
            details: { field: '-p', address: portKey(p), vm: o.name },
          });
      }
    }
  }

  /**
   * Listen on every port of `name`, forwarding to the guest address `guestIp()` gives when a
   * client connects (undefined: the client is closed). Idempotent for a VM already forwarded.
   */
  async open(name: string, ports: PortSpec[], guestIp: () => string | undefined, limits: PortLimits = this.defaults): Promise<void> {
    if (!ports.length || this.byVm.has(name)) return;
    const opened: TcpForwarder[] = [];
    try {
      for (const p of ports) {
        const port = formatPort(p);
        const f = new TcpForwarder(
          () => {
            const host = guestIp();
            return host ? { host, port: p.guestPort } : undefined;
          },
          {
            maxConnections: limits.maxConnections,
            idleTimeoutMs: limits.idleTimeoutSeconds * 1000,
            onCap: (ev, refused) => {
              if (ev === 'start')
                this.log.warn('published port at its connection cap: refusing new connections', { vm: name, port, maxConnections: limits.maxConnections });
              else this.log.warn('published port: connections refused at the cap', { vm: name, port, refused, maxConnections: limits.maxConnections });
            },
            onError: (e) => this.log.warn('port forwarder error', { vm: name, port, error: errorMessage(e) }),
          },
        );
        await f.listen(p.hostIp, p.hostPort);
        opened.push(f);
      }
    } catch (e) {
      await Promise.all(opened.map((f) => f.close()));
      throw e;
    }
    this.byVm.set(name, opened);
    this.log.info('published ports', { vm: name, ports: ports.map(formatPort), ...limits });
  }

  /** Stop forwarding `name`'s ports (live connections are closed). Idempotent. */
  async close(name: string): Promise<void> {
    const fs = this.byVm.get(name);
    this.byVm.delete(name);
    if (fs) await Promise.all(fs.map((f) => f.close()));
  }

  /** The forwarders of `name` (tests, diagnostics). */
  forwarders(name: string): readonly TcpForwarder[] {
    return this.byVm.get(name) ?? [];
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
