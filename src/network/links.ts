import { BangerError, ErrorCode } from '../core/errors.js';
import type { Exec } from '../core/exec.js';
import { toolEnv } from '../core/exec.js';

/**
 * Bridge and tap management through iproute2's JSON output (`ip -j`). Every teardown is
 * idempotent: a link that is already gone counts as removed.
 */
export interface LinkInfo {
  ifname: string;
  master?: string;
  operstate?: string;
  /** e.g. "tun" / "bridge" from `ip -d -j link` (linkinfo.info_kind). */
  kind?: string;
}

/** Tap names: `tap-` + 10 hex chars of the VM id (15 chars max for Linux interface names). */
export const TAP_PATTERN = /^tap-[0-9a-f]{10}$/;

const IFNAME = /^[a-zA-Z0-9_-]{1,15}$/;

export function tapName(vmId: string): string {
  const hex = vmId.replace(/[^0-9a-f]/g, '').slice(0, 10);
  if (hex.length !== 10) throw new BangerError(ErrorCode.Internal, `vm id '${vmId}' too short for a tap name`);
  return `tap-${hex}`;
}

export class Links {
  constructor(private readonly exec: Exec) {}

  private ip(args: string[], allowFailure = false) {
    return this.exec(['ip', ...args], { env: toolEnv(), allowFailure });
  }

  /** All links with their kind and master (one `ip -d -j link show`). */
  async list(): Promise<LinkInfo[]> {
    const r = await this.ip(['-d', '-j', 'link', 'show']);
    const raw = JSON.parse(r.stdout || '[]') as { ifname: string; master?: string; operstate?: string; linkinfo?: { info_kind?: string } }[];
    return raw.map((l) => ({ ifname: l.ifname, master: l.master, operstate: l.operstate, kind: l.linkinfo?.info_kind }));
  }

  async get(name: string): Promise<LinkInfo | undefined> {
    const r = await this.ip(['-d', '-j', 'link', 'show', 'dev', name], true);
    if (r.exitCode !== 0) return undefined;
    const [l] = JSON.parse(r.stdout || '[]') as { ifname: string; master?: string; operstate?: string; linkinfo?: { info_kind?: string } }[];
    return l && { ifname: l.ifname, master: l.master, operstate: l.operstate, kind: l.linkinfo?.info_kind };
  }

  /** IPv4 addresses (address/prefix) on a link. */
  async addresses(name: string): Promise<string[]> {
    const r = await this.ip(['-j', '-4', 'addr', 'show', 'dev', name]);
    const raw = JSON.parse(r.stdout || '[]') as { addr_info?: { local: string; prefixlen: number }[] }[];
    return raw.flatMap((l) => (l.addr_info ?? []).map((a) => `${a.local}/${a.prefixlen}`));
  }

  /**
   * Make sure the bridge exists, carries `gatewayCidr` and is up. Returns true when it was
   * created by this call (so a failed create can remove it again).
   */
  async ensureBridge(name: string, gatewayCidr: string): Promise<boolean> {
    // Fast path (one call): the bridge exists, is up and carries the gateway address.
    const r = await this.ip(['-j', '-4', '-d', 'addr', 'show', 'dev', name], true);
    if (r.exitCode === 0) {
      const [l] = JSON.parse(r.stdout || '[]') as { flags?: string[]; linkinfo?: { info_kind?: string }; addr_info?: { local: string; prefixlen: number }[] }[];
      const kind = l?.linkinfo?.info_kind;
      if (kind && kind !== 'bridge') {
        throw new BangerError(ErrorCode.Network, `network.bridge '${name}' exists but is a ${kind}, not a bridge`, { hint: "choose another name in the config field 'network.bridge'" });
      }
      const hasAddr = (l?.addr_info ?? []).some((a) => `${a.local}/${a.prefixlen}` === gatewayCidr);
      if (!hasAddr) await this.ip(['addr', 'add', gatewayCidr, 'dev', name]);
      if (!hasAddr || !l?.flags?.includes('UP')) await this.ip(['link', 'set', name, 'up']);
      return false;
    }
    await this.ip(['link', 'add', name, 'type', 'bridge']);
    await this.ip(['addr', 'add', gatewayCidr, 'dev', name]);
    await this.ip(['link', 'set', name, 'up']);
    return true;
  }

  /**
   * Create a persistent tap owned by root, attach it to `bridge`, bring it up: one `ip -batch`
   * run (one process instead of two on the create path). Names are checked first, since a
   * batch is line-based text.
   */
  async createTap(name: string, bridge: string): Promise<void> {
    for (const n of [name, bridge]) if (!IFNAME.test(n)) throw new BangerError(ErrorCode.Invalid, `invalid interface name '${n}'`);
    await this.exec(['ip', '-batch', '-'], { env: toolEnv(), input: `tuntap add dev ${name} mode tap\nlink set dev ${name} master ${bridge} up\n` });
  }

  /** Delete a link; already gone = success. */
  async remove(name: string): Promise<void> {
    const r = await this.ip(['link', 'del', 'dev', name], true);
    if (r.exitCode !== 0 && !/Cannot find device|does not exist/i.test(r.stderr) && (await this.get(name))) {
      throw new BangerError(ErrorCode.Network, `cannot delete link ${name}: ${r.stderr.trim()}`);
    }
  }
}
