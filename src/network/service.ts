import type { Context } from '../core/context.js';
import { BangerError, ErrorCode } from '../core/errors.js';
import { DnsForwarder } from './dns-forwarder.js';
import { Egress, type VmPairs, type VmPolicy } from './egress.js';
import { Links, TAP_PATTERN, tapName } from './links.js';
import { Nat } from './nat.js';
import { aliasOwner, bridgeAlias, instanceId, tapAlias } from './owner.js';
import { firstFreeIp, ipToInt, macForIp, parseSubnet, type Subnet } from './subnet.js';

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
 *
 * Ownership (owner.ts): the bridge, every tap and every NAT rule carry this instance's id;
 * the orphan scans return only resources marked with it (and, for taps made before marks
 * existed, unmarked banger-named taps on this instance's own bridge). A bridge marked by
 * another instance, or another link holding an address in this instance's subnet, is refused
 * with E_IN_USE naming the other owner and the config keys `network.bridge`/`network.subnet`.
 */
export class NetworkService {
  readonly links: Links;
  readonly nat: Nat;
  /** Per-VM egress policies (egress.ts): the instance's own nft table. */
  readonly egress: Egress;
  /** The DNS forwarder of hostname allows (dns-forwarder.ts), listening once a VM has one. */
  readonly dns: DnsForwarder;
  /** This instance's id (table `instance`). */
  readonly instance: string;
  /** The bridge was checked (ownership, subnet) and set up by this process. */
  private bridgeChecked = false;

  constructor(
    readonly ctx: Context,
    opts: { natBackend?: 'nft' | 'iptables'; enableForwarding?: () => Promise<void> } = {},
  ) {
    this.instance = instanceId(ctx.db);
    this.links = new Links(ctx.exec);
    this.nat = new Nat(ctx.exec, this.instance, { forceBackend: opts.natBackend, enableForwarding: opts.enableForwarding });
    this.egress = new Egress(ctx.exec, this.instance);
    this.dns = new DnsForwarder({
      upstreams: () => ctx.config.network.dns,
      open: (vmId, entries, ttl) => this.egress.addResolved(vmId, entries, ttl),
      log: ctx.log,
    });
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
  leaseInTx(
    vmName: string,
    /** runs with the chosen address before the lease row is written (e.g. insert the VM row it references) */ beforeInsert?: (ip: string) => void,
  ): string {
    const sn = this.subnet();
    const used = (this.ctx.db.prepare('SELECT ip FROM ip_leases').all() as { ip: string }[]).map((r) => r.ip);
    const ip = firstFreeIp(sn, used);
    if (!ip)
      throw new BangerError(ErrorCode.Network, `no free address left in ${sn.cidr}`, {
        hint: "remove unused VMs ('banger vm prune') or widen the config field 'network.subnet'",
      });
    beforeInsert?.(ip);
    this.ctx.db.prepare('INSERT INTO ip_leases (ip, vm_name, leased_at) VALUES (?, ?, ?)').run(ip, vmName, new Date().toISOString());
    return ip;
  }

  leaseOf(vmName: string): string | undefined {
    return (this.ctx.db.prepare('SELECT ip FROM ip_leases WHERE vm_name = ?').get(vmName) as { ip: string } | undefined)?.ip;
  }

  /** Every lease: VM name → address. */
  allLeases(): Map<string, string> {
    const rows = this.ctx.db.prepare('SELECT vm_name, ip FROM ip_leases').all() as { vm_name: string; ip: string }[];
    return new Map(rows.map((r) => [r.vm_name, r.ip]));
  }

  /** Release a lease (idempotent). Deleting the VM row releases it too (ON DELETE CASCADE). */
  release(vmName: string): void {
    this.ctx.db.prepare('DELETE FROM ip_leases WHERE vm_name = ?').run(vmName);
  }

  /** The full network description of a VM given its id and leased address. */
  describe(vmId: string, ip: string): VmNetwork {
    const sn = this.subnet();
    return {
      ip,
      prefix: sn.prefix,
      netmask: sn.netmask,
      gateway: sn.gateway,
      bridge: this.bridge,
      tap: tapName(vmId),
      mac: macForIp(ip),
      dns: this.ctx.config.network.dns,
    };
  }

  /**
   * Bridge up with the gateway address and this instance's mark. Returns true when this call
   * created it. Throws E_IN_USE when the bridge is marked by another instance or another link
   * holds an address inside `network.subnet`.
   */
  async ensureBridge(): Promise<boolean> {
    // Single flight: parallel creates share one check-and-create (two `ip link add` would race).
    this.bridgePending ??= this.ensureBridgeOnce().finally(() => (this.bridgePending = undefined));
    return this.bridgePending;
  }

  private bridgePending?: Promise<boolean>;

  private async ensureBridgeOnce(): Promise<boolean> {
    const sn = this.subnet();
    const refuse = (what: string, owner: { instance: string; root?: string } | undefined) =>
      new BangerError(
        ErrorCode.InUse,
        `${what}${owner ? ` belongs to another banger instance (${owner.instance}${owner.root ? `, state root ${owner.root}` : ''})` : ''}: two instances cannot share a bridge or subnet`,
        {
          hint: `give this instance its own config fields 'network.bridge' and 'network.subnet' (now '${this.bridge}' and '${sn.cidr}') in ${this.ctx.config.configFile}, or set BANGER_BRIDGE and BANGER_SUBNET`,
          details: { bridge: this.bridge, subnet: sn.cidr, otherInstance: owner?.instance },
        },
      );
    const mayUse = (alias: string | undefined) => {
      const owner = aliasOwner(alias);
      if (owner && owner.instance !== this.instance) throw refuse(`network.bridge '${this.bridge}'`, owner);
    };
    if (!this.bridgeChecked) {
      // Once per process (and whenever the bridge had to be made again): nothing else may sit in our subnet.
      for (const l of await this.links.listAddrs()) {
        if (l.ifname === this.bridge) continue;
        const clash = l.addrs.find((a) => overlaps(sn, a.local, a.prefixlen));
        if (clash)
          throw refuse(
            `network.subnet '${sn.cidr}' overlaps ${clash.local}/${clash.prefixlen} on link '${l.ifname}'${aliasOwner(l.alias) ? '' : " (not banger's)"}`,
            aliasOwner(l.alias),
          );
      }
    }
    const { created } = await this.links.ensureBridge(this.bridge, `${sn.gateway}/${sn.prefix}`, bridgeAlias(this.instance, this.ctx.config.root), mayUse);
    this.bridgeChecked = true;
    return created;
  }

  async createTap(net: VmNetwork, vmName: string): Promise<void> {
    await this.links.createTap(net.tap, net.bridge, tapAlias(this.instance, vmName));
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

  /**
   * Install or replace a VM's egress policy (one nft transaction; egress.ts). With hostname
   * allows the DNS forwarder listens on the gateway (the bridge is made first) and answers
   * the VM; a changed hostname list empties the VM's resolved addresses.
   */
  async applyPolicy(p: VmPolicy, pairs: VmPairs): Promise<void> {
    const hosts = p.hosts ?? [];
    if (hosts.length) {
      await this.ensureBridge();
      await this.dns.listen(p.gateway);
    }
    const flush = hosts.length ? this.dns.changes(p.vmId, hosts) : this.dns.unregister(p.vmId);
    await this.egress.apply(p, pairs, flush);
    if (hosts.length) this.dns.register(p.ip, p.vmId, hosts);
  }

  /** Remove a VM's egress policy (idempotent). `pairs`: the `--allow-vm` pairs left without it. */
  async removePolicy(vmId: string, pairs: VmPairs): Promise<void> {
    this.dns.unregister(vmId);
    await this.egress.remove(vmId, pairs);
  }

  /** Rewrite the `--allow-vm` pairs alone (a VM left). */
  async setPolicyPairs(pairs: VmPairs): Promise<void> {
    await this.egress.setPairs(pairs);
  }

  /** VM ids with a policy in this instance's table that are not in `knownIds`. */
  async orphanPolicies(knownIds: Set<string>): Promise<string[]> {
    return (await this.egress.vmIds()).filter((id) => !knownIds.has(id));
  }

  /**
   * Taps this instance made that no running VM owns: marked with our id, or (made before
   * marks existed) unmarked, banger-named and on our bridge while the bridge is ours.
   * Another instance's taps, and unmarked taps elsewhere, are never returned.
   */
  async orphanTaps(ownedTaps: Set<string>): Promise<string[]> {
    const links = await this.links.list();
    const bridge = links.find((l) => l.ifname === this.bridge);
    const bridgeOurs = aliasOwner(bridge?.alias)?.instance === this.instance;
    const ours = (l: (typeof links)[number]) => {
      const owner = aliasOwner(l.alias);
      if (owner) return owner.instance === this.instance;
      return !l.alias && bridgeOurs && l.master === this.bridge && TAP_PATTERN.test(l.ifname);
    };
    return links.filter((l) => l.kind === 'tun' && ours(l) && !ownedTaps.has(l.ifname)).map((l) => l.ifname);
  }

  /**
   * Remove everything of this instance's network that no VM may use any more: its taps, its NAT
   * rules, its egress-policy table, the shared nft table when no instance has a rule left, and its bridge (only when the
   * bridge carries this instance's mark). For `daemon.teardown`, after every VM has stopped.
   * Idempotent: what is already gone is skipped.
   */
  async teardown(): Promise<{ taps: string[]; natVms: string[]; natTable: boolean; policyTable: boolean; bridge: boolean }> {
    const taps = await this.orphanTaps(new Set());
    for (const t of taps) await this.removeTap(t);
    const natVms = await this.orphanNat(new Set());
    for (const id of natVms) await this.disableNat(id);
    const natTable = await this.nat.removeTableIfUnused().catch(() => false);
    const policyTable = await this.egress.removeTable().catch(() => false);
    const br = await this.links.get(this.bridge);
    const bridge = !!br && aliasOwner(br.alias)?.instance === this.instance;
    if (bridge) await this.links.remove(this.bridge);
    this.bridgeChecked = false;
    return { taps, natVms, natTable, policyTable, bridge };
  }

  /** VM ids whose NAT rules carry this instance's mark but are not in `knownIds`. */
  async orphanNat(knownIds: Set<string>): Promise<string[]> {
    try {
      return (await this.nat.vmIdsWithRules()).filter((id) => !knownIds.has(id));
    } catch {
      return []; // no NAT backend installed: nothing to clean
    }
  }
}

/** True when address/prefix and the subnet share any address. */
function overlaps(sn: Subnet, addr: string, prefix: number): boolean {
  const size = 2 ** (32 - prefix);
  const start = ipToInt(addr) - (ipToInt(addr) % size);
  const snSize = 2 ** (32 - sn.prefix);
  return start < sn.network + snSize && sn.network < start + size;
}
