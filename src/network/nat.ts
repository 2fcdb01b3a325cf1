import { BangerError, ErrorCode } from '../core/errors.js';
import type { Exec } from '../core/exec.js';
import { toolEnv, which } from '../core/exec.js';
import { writeFile } from 'node:fs/promises';

/**
 * Per-VM NAT. With nftables: one table `ip banger` holding a `postrouting` nat chain and a
 * `forward` filter chain; each VM's rules carry the comment `banger-vm:<vmId>` and are removed
 * by handle (found through `nft -j`), so removing one VM never touches another's rules.
 * Without nft: iptables rules with the same comment, deleted by exact spec.
 * All removals are idempotent.
 */
export const NFT_TABLE = 'banger';

export interface NatRule {
  chain: string;
  handle: number;
  comment: string;
}

export function natComment(vmId: string): string {
  return `banger-vm:${vmId}`;
}

export class Nat {
  private backend?: 'nft' | 'iptables';
  constructor(
    private readonly exec: Exec,
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
    const comment = natComment(vmId);
    if ((await this.which()) === 'nft') {
      await this.ensureTable();
      await this.nft(['add', 'rule', 'ip', NFT_TABLE, 'postrouting', 'ip', 'saddr', ip, 'oifname', '!=', bridge, 'masquerade', 'comment', JSON.stringify(comment)]);
      await this.nft(['add', 'rule', 'ip', NFT_TABLE, 'forward', 'iifname', bridge, 'ip', 'saddr', ip, 'accept', 'comment', JSON.stringify(comment)]);
      await this.nft(['add', 'rule', 'ip', NFT_TABLE, 'forward', 'oifname', bridge, 'ip', 'daddr', ip, 'ct', 'state', 'established,related', 'accept', 'comment', JSON.stringify(comment)]);
      return;
    }
    for (const spec of iptablesSpecs(comment, ip, bridge)) await this.exec(['iptables', '-w', '-t', spec.table, '-A', ...spec.args], { env: toolEnv() });
  }

  /** Remove every rule of one VM; rules already gone = success. */
  async remove(vmId: string): Promise<void> {
    const comment = natComment(vmId);
    if ((await this.which()) === 'nft') {
      for (const r of await this.rules()) {
        if (r.comment === comment) await this.nft(['delete', 'rule', 'ip', NFT_TABLE, r.chain, 'handle', String(r.handle)], true);
      }
      return;
    }
    // iptables: delete exactly the lines that carry this VM's comment, as `iptables -S` prints them.
    for (const table of ['nat', 'filter']) {
      const r = await this.exec(['iptables', '-w', '-t', table, '-S'], { env: toolEnv(), allowFailure: true });
      for (const line of r.stdout.split('\n')) {
        if (!line.startsWith('-A ') || !line.includes(comment)) continue;
        const args = splitIptablesLine(line);
        args[0] = '-D';
        await this.exec(['iptables', '-w', '-t', table, ...args], { env: toolEnv(), allowFailure: true });
      }
    }
  }

  /** All banger rules (nft only; iptables → rules found by comment in `iptables -S`). */
  async rules(): Promise<NatRule[]> {
    if ((await this.which()) === 'nft') {
      const r = await this.exec(['nft', '-j', 'list', 'table', 'ip', NFT_TABLE], { env: toolEnv(), allowFailure: true });
      if (r.exitCode !== 0) return [];
      const doc = JSON.parse(r.stdout) as { nftables: { rule?: { chain: string; handle: number; comment?: string } }[] };
      return doc.nftables.flatMap((o) => (o.rule ? [{ chain: o.rule.chain, handle: o.rule.handle, comment: o.rule.comment ?? '' }] : []));
    }
    const out: NatRule[] = [];
    for (const table of ['nat', 'filter']) {
      const r = await this.exec(['iptables', '-w', '-t', table, '-S'], { env: toolEnv(), allowFailure: true });
      for (const line of r.stdout.split('\n')) {
        const m = /--comment "?(banger-vm:[0-9a-f]+)"?/.exec(line);
        if (m) out.push({ chain: `${table}:${line.split(' ')[1]}`, handle: -1, comment: m[1]! });
      }
    }
    return out;
  }

  /** VM ids that have rules (for reconcile: remove the ones no VM owns). */
  async vmIdsWithRules(): Promise<string[]> {
    return [...new Set((await this.rules()).map((r) => r.comment).filter((c) => c.startsWith('banger-vm:')).map((c) => c.slice('banger-vm:'.length)))];
  }

  private async ensureTable(): Promise<void> {
    // `add` is idempotent in nft for tables and chains.
    await this.nft(['add', 'table', 'ip', NFT_TABLE]);
    await this.nft(['add', 'chain', 'ip', NFT_TABLE, 'postrouting', '{ type nat hook postrouting priority srcnat ; policy accept ; }']);
    await this.nft(['add', 'chain', 'ip', NFT_TABLE, 'forward', '{ type filter hook forward priority filter ; policy accept ; }']);
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
