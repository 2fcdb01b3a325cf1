import { BangerError, ErrorCode } from '../core/errors.js';
import type { Exec } from '../core/exec.js';
import { toolEnv, which } from '../core/exec.js';
import { writeFile } from 'node:fs/promises';

/**
 * Per-VM NAT. With nftables: one table `ip banger` (shared by every instance on the host or
 * namespace) holding a `postrouting` nat chain and a `forward` filter chain; a VM's rules are
 * added in one `nft -f` transaction (all or nothing), carry the comment
 * `banger:<instance>:vm:<vmId>` (see owner.ts) and are removed by handle (found through
 * `nft -j`), so removing one VM never touches another's rules, and an instance's reconcile
 * sees only its own. Rules from before instance marks (`banger-vm:<vmId>`) are removed by VM
 * id but never counted as any instance's orphans. Without nft: iptables rules with the same
 * comment, deleted by exact spec. All removals are idempotent.
 *
 * Another firewall's drop wins over our accept: in nftables every base chain on the forward
 * hook must accept a packet, so the `FORWARD` policy DROP that Docker sets (iptables, nft or
 * legacy backend) would silently drop the guests' traffic. When iptables shows that policy,
 * the VM's two forward accepts are also inserted at the top of iptables' FORWARD chain, with
 * the same comment, and removed with the rest.
 */
export const NFT_TABLE = 'banger';

export interface NatRule {
  chain: string;
  handle: number;
  comment: string;
}

export function natComment(instance: string, vmId: string): string {
  return `banger:${instance}:vm:${vmId}`;
}

/** The owner of a rule comment: instance (undefined for the unmarked legacy form) and VM id. */
export function parseNatComment(comment: string): { instance?: string; vmId: string } | undefined {
  const m = /^banger:([0-9a-f]{12}):vm:([0-9a-f]+)$/.exec(comment);
  if (m) return { instance: m[1]!, vmId: m[2]! };
  const legacy = /^banger-vm:([0-9a-f]+)$/.exec(comment);
  return legacy ? { vmId: legacy[1]! } : undefined;
}

export class Nat {
  private backend?: 'nft' | 'iptables';
  constructor(
    private readonly exec: Exec,
    /** This instance's id: the mark on every rule it adds. */
    private readonly instance: string,
    private readonly opts: { forceBackend?: 'nft' | 'iptables'; enableForwarding?: () => Promise<void> } = {},
  ) {}

  async which(): Promise<'nft' | 'iptables'> {
    if (this.opts.forceBackend) return this.opts.forceBackend;
    if (this.backend) return this.backend;
    if (await which('nft')) return (this.backend = 'nft');
    if (await which('iptables')) return (this.backend = 'iptables');
    throw new BangerError(ErrorCode.Network, '--nat needs nft or iptables, and neither was found', { hint: 'apt-get install nftables' });
  }

  /** net.ipv4.ip_forward=1 (written to /proc; per network namespace). */
  async enableForwarding(): Promise<void> {
    if (this.opts.enableForwarding) return this.opts.enableForwarding();
    await writeFile('/proc/sys/net/ipv4/ip_forward', '1\n');
  }

  /** Add masquerade + forward rules for one guest. */
  async add(vmId: string, ip: string, bridge: string): Promise<void> {
    if (!/^[0-9a-f]+$/.test(vmId) || !/^\d{1,3}(\.\d{1,3}){3}$/.test(ip) || !/^[a-zA-Z0-9_-]{1,15}$/.test(bridge)) {
      throw new BangerError(ErrorCode.Internal, `nat: refusing malformed vm id '${vmId}', ip '${ip}' or bridge '${bridge}'`);
    }
    const comment = natComment(this.instance, vmId);
    if ((await this.which()) === 'nft') {
      const c = `comment "${comment}"`;
      const script = [
        // `add` is idempotent in nft for tables and chains.
        `add table ip ${NFT_TABLE}`,
        `add chain ip ${NFT_TABLE} postrouting { type nat hook postrouting priority srcnat ; policy accept ; }`,
        `add chain ip ${NFT_TABLE} forward { type filter hook forward priority filter ; policy accept ; }`,
        `add rule ip ${NFT_TABLE} postrouting ip saddr ${ip} oifname != "${bridge}" masquerade ${c}`,
        `add rule ip ${NFT_TABLE} forward iifname "${bridge}" ip saddr ${ip} accept ${c}`,
        `add rule ip ${NFT_TABLE} forward oifname "${bridge}" ip daddr ${ip} ct state established,related accept ${c}`,
      ];
      await this.exec(['nft', '-f', '-'], { env: toolEnv(), input: script.join('\n') + '\n' });
      if (await this.forwardPolicyDrops()) {
        for (const spec of iptablesSpecs(comment, ip, bridge).filter((x) => x.table === 'filter'))
          await this.exec(['iptables', '-w', '-t', 'filter', '-I', spec.args[0]!, '1', ...spec.args.slice(1)], { env: toolEnv() });
      }
      return;
    }
    // iptables: masquerade appended to POSTROUTING; forward accepts inserted first, ahead of any drop.
    for (const spec of iptablesSpecs(comment, ip, bridge)) {
      const where = spec.table === 'filter' ? ['-I', spec.args[0]!, '1'] : ['-A', spec.args[0]!];
      await this.exec(['iptables', '-w', '-t', spec.table, ...where, ...spec.args.slice(1)], { env: toolEnv() });
    }
  }

  /** True when iptables exists and its FORWARD chain's policy is DROP (Docker sets it). */
  async forwardPolicyDrops(): Promise<boolean> {
    if (!(await which('iptables'))) return false;
    const r = await this.exec(['iptables', '-w', '-t', 'filter', '-S', 'FORWARD'], { env: toolEnv(), allowFailure: true });
    return r.exitCode === 0 && /^-P FORWARD DROP\s*$/m.test(r.stdout);
  }

  /** Remove every rule of one VM (marked or legacy comment); rules already gone = success. */
  async remove(vmId: string): Promise<void> {
    const isVm = (comment: string) => parseNatComment(comment)?.vmId === vmId;
    if ((await this.which()) === 'nft') {
      for (const r of await this.nftRules()) {
        if (isVm(r.comment)) await this.nft(['delete', 'rule', 'ip', NFT_TABLE, r.chain, 'handle', String(r.handle)], true);
      }
      if (await which('iptables')) await this.removeIptables(isVm, ['filter']); // forward-policy accepts, if any
      return;
    }
    await this.removeIptables(isVm, ['nat', 'filter']);
  }

  /** Delete exactly the iptables lines whose comment `match`es, as `iptables -S` prints them. */
  private async removeIptables(match: (comment: string) => boolean, tables: string[]): Promise<void> {
    for (const table of tables) {
      const r = await this.exec(['iptables', '-w', '-t', table, '-S'], { env: toolEnv(), allowFailure: true });
      for (const line of r.stdout.split('\n')) {
        const c = /--comment "?([^" ]+)"?(\s|$)/.exec(line);
        if (!line.startsWith('-A ') || !c || !match(c[1]!)) continue;
        const args = splitIptablesLine(line);
        args[0] = '-D';
        await this.exec(['iptables', '-w', '-t', table, ...args], { env: toolEnv(), allowFailure: true });
      }
    }
  }

  /** All banger rules: nft's by handle, plus iptables lines found by comment (handle -1). */
  async rules(): Promise<NatRule[]> {
    if ((await this.which()) === 'nft') return [...(await this.nftRules()), ...((await which('iptables')) ? await this.iptablesRules(['filter']) : [])];
    return this.iptablesRules(['nat', 'filter']);
  }

  private async nftRules(): Promise<NatRule[]> {
    const r = await this.exec(['nft', '-j', 'list', 'table', 'ip', NFT_TABLE], { env: toolEnv(), allowFailure: true });
    if (r.exitCode !== 0) return [];
    const doc = JSON.parse(r.stdout) as { nftables: { rule?: { chain: string; handle: number; comment?: string } }[] };
    return doc.nftables.flatMap((o) => (o.rule ? [{ chain: o.rule.chain, handle: o.rule.handle, comment: o.rule.comment ?? '' }] : []));
  }

  private async iptablesRules(tables: string[]): Promise<NatRule[]> {
    const out: NatRule[] = [];
    for (const table of tables) {
      const r = await this.exec(['iptables', '-w', '-t', table, '-S'], { env: toolEnv(), allowFailure: true });
      for (const line of r.stdout.split('\n')) {
        const m = /--comment "?([^" ]+)"?(\s|$)/.exec(line);
        if (m && parseNatComment(m[1]!)) out.push({ chain: `${table}:${line.split(' ')[1]}`, handle: -1, comment: m[1]! });
      }
    }
    return out;
  }

  /** VM ids that have rules marked by THIS instance (for reconcile: remove the ones no VM owns). */
  async vmIdsWithRules(): Promise<string[]> {
    const ids = (await this.rules())
      .map((r) => parseNatComment(r.comment))
      .filter((o) => o?.instance === this.instance)
      .map((o) => o!.vmId);
    return [...new Set(ids)];
  }

  /**
   * Delete the shared `ip banger` table once it holds no rule of any instance (teardown, package
   * removal). Returns true when it was deleted; absent or still used by another instance: false.
   */
  async removeTableIfUnused(): Promise<boolean> {
    if (!(await which('nft'))) return false;
    const r = await this.nft(['-j', 'list', 'table', 'ip', NFT_TABLE], true);
    if (r.exitCode !== 0) return false;
    if ((await this.nftRules()).length) return false;
    await this.nft(['delete', 'table', 'ip', NFT_TABLE], true);
    return true;
  }

  private nft(args: string[], allowFailure = false) {
    return this.exec(['nft', ...args], { env: toolEnv(), allowFailure });
  }
}

function iptablesSpecs(comment: string, ip: string, bridge: string): { table: string; args: string[] }[] {
  const c = ['-m', 'comment', '--comment', comment];
  return [
    { table: 'nat', args: ['POSTROUTING', '-s', ip, '!', '-o', bridge, ...c, '-j', 'MASQUERADE'] },
    { table: 'filter', args: ['FORWARD', '-i', bridge, '-s', ip, ...c, '-j', 'ACCEPT'] },
    { table: 'filter', args: ['FORWARD', '-o', bridge, '-d', ip, '-m', 'conntrack', '--ctstate', 'ESTABLISHED,RELATED', ...c, '-j', 'ACCEPT'] },
  ];
}

/** Split one `iptables -S` line into argv (double-quoted words keep their spaces). */
export function splitIptablesLine(line: string): string[] {
  const out: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|(\S+)/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(line))) out.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : m[2]!);
  return out;
}
