import { BangerError, ErrorCode } from '../core/errors.js';
import type { Exec } from '../core/exec.js';
import { toolEnv, which } from '../core/exec.js';
import type { AllowRule, HostAllow } from './allow-spec.js';
import { natComment, parseNatComment } from './nat.js';

/**
 * Egress policy of VMs (`--egress deny|allow`, docs/network-policy.md), in nftables.
 *
 * One table per instance, `bridge banger-<instance>` (the instance owns it whole: nothing of
 * another instance or another program is ever in it). Its base chains `input` (frames from a
 * tap to the host: the host's services and everything routed on, NAT included) and `forward`
 * (frames from a tap to another port of the bridge: other VMs) each hold one jump per VM with
 * a policy, `iifname "<tap>" jump vm-<vmId>`, commented `banger:<instance>:vm:<vmId>`. The
 * chain `vm-<vmId>` is the VM's whole policy; the set `pairs` (address . address) holds the
 * VM-to-VM exceptions of `--allow-vm`, both directions.
 *
 * The filter is stateless (the bridge family has conntrack only with nf_conntrack_bridge,
 * which many kernels lack): what the guest may send is decided per frame. The guest's own
 * MAC and address are enforced first (no spoofing another VM), then: ARP; TCP replies from
 * the guest ports the host connects to (SSH, published ports), never a SYN; what banger
 * serves it (package mirror/proxy); `pairs`; nothing else in the VM subnet, no multicast or
 * broadcast; the `--allow` destinations; drop.
 *
 * apply() and remove() are each one `nft -f` transaction (all or nothing), so a policy is
 * replaced atomically; both are idempotent.
 */
export interface VmPolicy {
  vmId: string;
  tap: string;
  ip: string;
  mac: string;
  gateway: string;
  /** The VM subnet (network.subnet). */
  subnet: string;
  allow: AllowRule[];
  /** Host services banger hands this VM (package mirror/proxy): address, port, protocol. */
  served: Array<{ ip: string; port: number; proto: 'tcp' | 'udp' }>;
  /** Guest TCP ports the host connects to (22, published ports): their replies to the gateway pass. */
  replyPorts: number[];
  /**
   * Hostname allows (`--allow HOSTNAME[:PORT]`): DNS to the gateway's port 53 passes, and the
   * addresses the forwarder answered pass while in the VM's timeout sets (`h-<id>`: every
   * port, `hp-<id>`: address . TCP port).
   */
  hosts?: HostAllow[];
}

/** One resolved address of a hostname allow, opened for its TTL. */
export interface Resolved {
  ip: string;
  /** TCP port; none: every protocol and port. */
  port?: number;
}

/** Longest an answered address stays open, whatever TTL the record carried (seconds). */
export const MAX_RESOLVED_TTL = 86_400;

/** Address pairs that may talk across the bridge (`--allow-vm`), each in both directions. */
export type VmPairs = Array<[string, string]>;

const IPV4 = /^\d{1,3}(\.\d{1,3}){3}$/;
const CIDR = /^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/;
const MAC = /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/;
const IFNAME = /^[a-zA-Z0-9_-]{1,15}$/;

interface NftRule {
  chain: string;
  handle: number;
  comment: string;
}

export class Egress {
  constructor(
    private readonly exec: Exec,
    /** This instance's id: the table's name and the mark on each jump. */
    private readonly instance: string,
  ) {}

  get table(): string {
    return `banger-${this.instance}`;
  }

  private async need(): Promise<void> {
    if (!(await which('nft'))) {
      throw new BangerError(ErrorCode.Network, 'an egress policy (--egress deny|allow, --allow) needs nftables, and nft was not found', {
        hint: 'apt-get install nftables',
      });
    }
  }

  /**
   * Install or replace one VM's policy and the pairs set, in one transaction. The VM's
   * resolved-address sets are kept (a restart re-applies with the guest's answers still
   * cached) unless `flushResolved` (its hostname list changed).
   */
  async apply(p: VmPolicy, pairs: VmPairs, flushResolved = false): Promise<void> {
    check(p);
    await this.need();
    const t = `bridge ${this.table}`;
    const chain = `vm-${p.vmId}`;
    const have = (await this.rules()).filter((r) => r.comment === natComment(this.instance, p.vmId));
    const lines = [
      ...this.skeleton(),
      `add chain ${t} ${chain}`,
      `flush chain ${t} ${chain}`,
      `add set ${t} h-${p.vmId} { type ipv4_addr ; flags timeout ; }`,
      `add set ${t} hp-${p.vmId} { type ipv4_addr . inet_service ; flags timeout ; }`,
      ...(flushResolved ? [`flush set ${t} h-${p.vmId}`, `flush set ${t} hp-${p.vmId}`] : []),
      ...policyRules(p).map((r) => `add rule ${t} ${chain} ${r}`),
      ...pairLines(t, pairs),
    ];
    for (const base of ['input', 'forward']) {
      if (!have.some((r) => r.chain === base))
        lines.push(`add rule ${t} ${base} iifname "${p.tap}" jump ${chain} comment "${natComment(this.instance, p.vmId)}"`);
    }
    await this.nftScript(lines);
  }

  /** Remove one VM's jumps and chain and rewrite the pairs set (one transaction); already gone = success. */
  async remove(vmId: string, pairs: VmPairs): Promise<void> {
    if (!/^[0-9a-f]+$/.test(vmId)) throw new BangerError(ErrorCode.Internal, `egress: refusing malformed vm id '${vmId}'`);
    if (!(await which('nft'))) return;
    const doc = await this.list();
    if (!doc) return;
    const t = `bridge ${this.table}`;
    const lines = [...this.skeleton()];
    for (const r of rulesOf(doc)) if (parseNatComment(r.comment)?.vmId === vmId) lines.push(`delete rule ${t} ${r.chain} handle ${r.handle}`);
    if (doc.some((o) => o.chain?.name === `vm-${vmId}`)) lines.push(`delete chain ${t} vm-${vmId}`);
    for (const set of [`h-${vmId}`, `hp-${vmId}`]) if (doc.some((o) => o.set?.name === set)) lines.push(`delete set ${t} ${set}`);
    lines.push(...pairLines(t, pairs));
    await this.nftScript(lines);
  }

  /**
   * Open answered addresses of a hostname allow for `ttl` seconds (1 to MAX_RESOLVED_TTL),
   * refreshing the timeout of one already open; one transaction. Fails when the VM's sets are
   * gone (it was removed meanwhile).
   */
  async addResolved(vmId: string, entries: Resolved[], ttl: number): Promise<void> {
    if (!/^[0-9a-f]+$/.test(vmId)) throw new BangerError(ErrorCode.Internal, `egress: refusing malformed vm id '${vmId}'`);
    if (entries.some((e) => !IPV4.test(e.ip) || (e.port !== undefined && (!Number.isInteger(e.port) || e.port < 1 || e.port > 65535))))
      throw new BangerError(ErrorCode.Internal, 'egress: refusing a malformed resolved address');
    if (!entries.length) return;
    const secs = Math.min(MAX_RESOLVED_TTL, Math.max(1, Math.floor(ttl)));
    const t = `bridge ${this.table}`;
    const lines: string[] = [];
    for (const e of entries) {
      const [set, elem] = e.port === undefined ? [`h-${vmId}`, e.ip] : [`hp-${vmId}`, `${e.ip} . ${e.port}`];
      // add (no error when present), delete, add again: a present element gets the new timeout.
      lines.push(
        `add element ${t} ${set} { ${elem} timeout ${secs}s }`,
        `delete element ${t} ${set} { ${elem} }`,
        `add element ${t} ${set} { ${elem} timeout ${secs}s }`,
      );
    }
    await this.nftScript(lines);
  }

  /** Rewrite the pairs set alone (a VM named by `--allow-vm` left); no table: nothing to do. */
  async setPairs(pairs: VmPairs): Promise<void> {
    if (!(await which('nft')) || !(await this.list())) return;
    await this.nftScript([...this.skeleton(), ...pairLines(`bridge ${this.table}`, pairs)]);
  }

  /** VM ids with a policy in this instance's table (for reconcile). */
  async vmIds(): Promise<string[]> {
    if (!(await which('nft'))) return [];
    const doc = await this.list();
    if (!doc) return [];
    const ids = doc.flatMap((o) => {
      const m = /^vm-([0-9a-f]+)$/.exec(o.chain?.name ?? '');
      return m ? [m[1]!] : [];
    });
    return [...new Set([...ids, ...rulesOf(doc).flatMap((r) => parseNatComment(r.comment)?.vmId ?? [])])];
  }

  /** The rules of one VM's chain as nft prints them (`vm show`, tests), or undefined without one. */
  async chainText(vmId: string): Promise<string | undefined> {
    if (!/^[0-9a-f]+$/.test(vmId) || !(await which('nft'))) return undefined;
    const r = await this.exec(['nft', 'list', 'chain', 'bridge', this.table, `vm-${vmId}`], { env: toolEnv(), allowFailure: true });
    return r.exitCode === 0 ? r.stdout : undefined;
  }

  /** Delete this instance's table (daemon teardown, once no VM runs). True when there was one. */
  async removeTable(): Promise<boolean> {
    if (!(await which('nft'))) return false;
    const r = await this.exec(['nft', 'delete', 'table', 'bridge', this.table], { env: toolEnv(), allowFailure: true });
    return r.exitCode === 0;
  }

  private async rules(): Promise<NftRule[]> {
    const doc = await this.list();
    return doc ? rulesOf(doc) : [];
  }

  private async list(): Promise<NftObject[] | undefined> {
    const r = await this.exec(['nft', '-j', 'list', 'table', 'bridge', this.table], { env: toolEnv(), allowFailure: true });
    if (r.exitCode !== 0) return undefined;
    return (JSON.parse(r.stdout) as { nftables: NftObject[] }).nftables;
  }

  /** Table, base chains and set (nft's `add` is idempotent for these). */
  private skeleton(): string[] {
    const t = `bridge ${this.table}`;
    return [
      `add table ${t}`,
      `add chain ${t} input { type filter hook input priority filter ; policy accept ; }`,
      `add chain ${t} forward { type filter hook forward priority filter ; policy accept ; }`,
      `add set ${t} pairs { type ipv4_addr . ipv4_addr ; }`,
    ];
  }

  private async nftScript(lines: string[]): Promise<void> {
    await this.exec(['nft', '-f', '-'], { env: toolEnv(), input: lines.join('\n') + '\n' });
  }
}

interface NftObject {
  chain?: { name: string };
  set?: { name: string };
  rule?: { chain: string; handle: number; comment?: string };
}

function rulesOf(doc: NftObject[]): NftRule[] {
  return doc.flatMap((o) => (o.rule ? [{ chain: o.rule.chain, handle: o.rule.handle, comment: o.rule.comment ?? '' }] : []));
}

function pairLines(t: string, pairs: VmPairs): string[] {
  for (const [a, b] of pairs) if (!IPV4.test(a) || !IPV4.test(b)) throw new BangerError(ErrorCode.Internal, `egress: malformed pair ${a} ${b}`);
  const elems = [...new Set(pairs.flatMap(([a, b]) => [`${a} . ${b}`, `${b} . ${a}`]))];
  return [`flush set ${t} pairs`, ...(elems.length ? [`add element ${t} pairs { ${elems.join(', ')} }`] : [])];
}

function check(p: VmPolicy): void {
  const problems = [
    !/^[0-9a-f]+$/.test(p.vmId) && `vm id '${p.vmId}'`,
    !IFNAME.test(p.tap) && `tap '${p.tap}'`,
    !IPV4.test(p.ip) && `address '${p.ip}'`,
    !IPV4.test(p.gateway) && `gateway '${p.gateway}'`,
    !MAC.test(p.mac) && `mac '${p.mac}'`,
    !CIDR.test(p.subnet) && `subnet '${p.subnet}'`,
    p.allow.some((a) => !CIDR.test(a.cidr)) && 'an allow CIDR',
    p.served.some((s) => !IPV4.test(s.ip)) && 'a served address',
    [...p.served.map((s) => s.port), ...p.replyPorts, ...p.allow.flatMap((a) => a.port ?? []), ...(p.hosts ?? []).flatMap((h) => h.port ?? [])].some(
      (n) => !Number.isInteger(n) || n < 1 || n > 65535,
    ) && 'a port',
  ].filter(Boolean);
  if (problems.length) throw new BangerError(ErrorCode.Internal, `egress: refusing a malformed policy for vm ${p.vmId}: ${problems.join(', ')}`);
}

/** The body of chain vm-<id>, in order (first match wins; the last rule drops). */
export function policyRules(p: VmPolicy): string[] {
  const replies = [...new Set([22, ...p.replyPorts])].sort((a, b) => a - b);
  const hosts = (p.hosts ?? []).length > 0;
  return [
    `ether saddr != ${p.mac} drop`,
    `arp saddr ip != ${p.ip} drop`,
    'ether type arp accept',
    'ether type != ip drop',
    `ip saddr != ${p.ip} drop`,
    `ip daddr ${p.gateway} tcp sport { ${replies.join(', ')} } tcp flags & (syn | ack) != syn accept`,
    ...p.served.map((s) => `ip daddr ${s.ip} ${s.proto} dport ${s.port} accept`),
    ...(hosts ? [`ip daddr ${p.gateway} udp dport 53 accept`] : []),
    'ip saddr . ip daddr @pairs accept',
    `ip daddr ${p.subnet} drop`,
    'ip daddr { 224.0.0.0/4, 255.255.255.255 } drop',
    ...p.allow.map((a) => (a.port === undefined ? `ip daddr ${a.cidr} accept` : `ip daddr ${a.cidr} ${a.proto ?? 'tcp'} dport ${a.port} accept`)),
    ...(hosts ? [`ip daddr @h-${p.vmId} accept`, `ip daddr . tcp dport @hp-${p.vmId} accept`] : []),
    'drop',
  ];
}
