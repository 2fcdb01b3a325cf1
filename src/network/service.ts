import type { Context } from '../daemon/context.js';
import { BangerError, ErrorCode } from '../core/errors.js';
import { Links, TAP_PATTERN, tapName } from './links.js';
import { Nat } from './nat.js';
import { firstFreeIp, macForIp, parseSubnet, type Subnet } from './subnet.js';

/** What a VM's network looks like, as handed to the VMM driver and the guest seed. */
export interface VmNetwork {
  ip: string;
  prefix: number;
  netmask: string;
  gateway: string;
  bridge: string;
  tap: string;
  mac: string;
  dns: string[];
}

/**
 * Network: the bridge, one tap per VM, IP leases (table `ip_leases`) and NAT.
 * Leases are taken inside the caller's transaction (`leaseInTx`) together with the VM row;
 * `ip_leases.ip` is the primary key, so two VMs can never hold one address.
 * Every teardown method is idempotent.
 */
export class NetworkService {
  readonly links: Links;
  readonly nat: Nat;

  constructor(readonly ctx: Context, opts: { natBackend?: 'nft' | 'iptables'; enableForwarding?: () => Promise<void> } = {}) {
    this.links = new Links(ctx.exec);
    this.nat = new Nat(ctx.exec, { forceBackend: opts.natBackend, enableForwarding: opts.enableForwarding });
  }

  get bridge(): string {
    return this.ctx.config.network.bridge;
  }

  subnet(): Subnet {
    return parseSubnet(this.ctx.config.network.subnet);
  }

  /**
   * Lease the lowest free guest address for `vmName`. MUST run inside a `db.transaction`
   * that also inserts the VM row (the lease references it). Throws E_NETWORK when full.
   */
  leaseInTx(vmName: string): string {
    const sn = this.subnet();
    const used = (this.ctx.db.prepare('SELECT ip FROM ip_leases').all() as { ip: string }[]).map((r) => r.ip);
    const ip = firstFreeIp(sn, used);
    if (!ip) throw new BangerError(ErrorCode.Network, `no free address left in ${sn.cidr}`, { hint: "remove unused VMs ('banger vm prune') or widen the config field 'network.subnet'" });
    this.ctx.db.prepare('INSERT INTO ip_leases (ip, vm_name, leased_at) VALUES (?, ?, ?)').run(ip, vmName, new Date().toISOString());
    return ip;
  }

  leaseOf(vmName: string): string | undefined {
    return (this.ctx.db.prepare('SELECT ip FROM ip_leases WHERE vm_name = ?').get(vmName) as { ip: string } | undefined)?.ip;
  }

  /** Release a lease (idempotent). Deleting the VM row releases it too (ON DELETE CASCADE). */
  release(vmName: string): void {
    this.ctx.db.prepare('DELETE FROM ip_leases WHERE vm_name = ?').run(vmName);
  }

  /** The full network description of a VM given its id and leased address. */
  describe(vmId: string, ip: string): VmNetwork {
    const sn = this.subnet();
    return { ip, prefix: sn.prefix, netmask: sn.netmask, gateway: sn.gateway, bridge: this.bridge, tap: tapName(vmId), mac: macForIp(ip), dns: this.ctx.config.network.dns };
  }

  /** Bridge up with the gateway address. Returns true when this call created it. */
  async ensureBridge(): Promise<boolean> {
    const sn = this.subnet();
    return this.links.ensureBridge(this.bridge, `${sn.gateway}/${sn.prefix}`);
  }

  async createTap(net: VmNetwork): Promise<void> {
    await this.links.createTap(net.tap, net.bridge);
  }

  async removeTap(tap: string): Promise<void> {
    await this.links.remove(tap);
  }

  async tapExists(tap: string): Promise<boolean> {
    return !!(await this.links.get(tap));
  }

  async enableNat(vmId: string, ip: string): Promise<void> {
    await this.nat.enableForwarding();
    await this.nat.add(vmId, ip, this.bridge);
  }

  async disableNat(vmId: string): Promise<void> {
    await this.nat.remove(vmId);
  }

  /** Taps that follow banger's naming scheme, sit on our bridge (or nowhere) and no VM owns. */
  async orphanTaps(ownedTaps: Set<string>): Promise<string[]> {
    const links = await this.links.list();
    return links.filter((l) => TAP_PATTERN.test(l.ifname) && (!l.master || l.master === this.bridge) && !ownedTaps.has(l.ifname)).map((l) => l.ifname);
  }

  /** VM ids that own NAT rules but are not in `knownIds`. */
  async orphanNat(knownIds: Set<string>): Promise<string[]> {
    try {
      return (await this.nat.vmIdsWithRules()).filter((id) => !knownIds.has(id));
    } catch {
      return []; // no NAT backend installed: nothing to clean
    }
  }
}
