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
  /** `ip link set … alias`: the owning instance's mark (see owner.ts). */
  alias?: string;
}

/** A link with its IPv4 addresses and alias (for the subnet-overlap check). */
export interface LinkAddrs {
  ifname: string;
  alias?: string;
  kind?: string;
  addrs: { local: string; prefixlen: number }[];
}

type RawLink = {
  ifname: string;
  master?: string;
  operstate?: string;
  ifalias?: string;
  flags?: string[];
  linkinfo?: { info_kind?: string };
  addr_info?: { family?: string; local: string; prefixlen: number }[];
};

function toInfo(l: RawLink): LinkInfo {
  return { ifname: l.ifname, master: l.master, operstate: l.operstate, kind: l.linkinfo?.info_kind, alias: l.ifalias };
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
    return (JSON.parse(r.stdout || '[]') as RawLink[]).map(toInfo);
  }

  /** Every link with its IPv4 addresses and alias (one `ip -d -j addr show`). */
  async listAddrs(): Promise<LinkAddrs[]> {
    const r = await this.ip(['-d', '-j', 'addr', 'show']);
    return (JSON.parse(r.stdout || '[]') as RawLink[]).map((l) => ({
      ifname: l.ifname,
      alias: l.ifalias,
      kind: l.linkinfo?.info_kind,
      addrs: (l.addr_info ?? []).filter((a) => a.family === 'inet').map((a) => ({ local: a.local, prefixlen: a.prefixlen })),
    }));
  }

  /** Set a link's alias (the owner mark). */
  async setAlias(name: string, alias: string): Promise<void> {
    await this.ip(['link', 'set', 'dev', name, 'alias', alias]);
  }

  async get(name: string): Promise<LinkInfo | undefined> {
    const r = await this.ip(['-d', '-j', 'link', 'show', 'dev', name], true);
    if (r.exitCode !== 0) return undefined;
    const [l] = JSON.parse(r.stdout || '[]') as RawLink[];
    return l && toInfo(l);
  }

  /** IPv4 addresses (address/prefix) on a link. */
  async addresses(name: string): Promise<string[]> {
    const r = await this.ip(['-j', '-4', 'addr', 'show', 'dev', name]);
    const raw = JSON.parse(r.stdout || '[]') as { addr_info?: { local: string; prefixlen: number }[] }[];
    return raw.flatMap((l) => (l.addr_info ?? []).map((a) => `${a.local}/${a.prefixlen}`));
  }

  /**
   * Make sure the bridge exists, carries `gatewayCidr` and `alias` (the owner mark) and is up.
   * An existing bridge's alias is first handed to `mayUse`, which throws to refuse it (another
   * owner's bridge). `created` is true when this call made the bridge. Throws E_NETWORK when a
   * link of that name exists but is no bridge.
   */
  async ensureBridge(name: string, gatewayCidr: string, alias: string, mayUse: (existingAlias: string | undefined) => void): Promise<{ created: boolean }> {
    // Fast path (one call): the bridge exists, is up and carries the gateway address and our mark.
    const r = await this.ip(['-j', '-d', 'addr', 'show', 'dev', name], true);
    if (r.exitCode === 0) {
      const [l] = JSON.parse(r.stdout || '[]') as RawLink[];
      const kind = l?.linkinfo?.info_kind;
      if (kind && kind !== 'bridge') {
        throw new BangerError(ErrorCode.Network, `network.bridge '${name}' exists but is a ${kind}, not a bridge`, {
          hint: "choose another name in the config field 'network.bridge'",
        });
      }
      mayUse(l?.ifalias);
      if (l?.ifalias !== alias) await this.setAlias(name, alias);
      const hasAddr = (l?.addr_info ?? []).some((a) => a.family === 'inet' && `${a.local}/${a.prefixlen}` === gatewayCidr);
      if (!hasAddr) await this.ip(['addr', 'add', gatewayCidr, 'dev', name]);
      if (!hasAddr || !l?.flags?.includes('UP')) await this.ip(['link', 'set', name, 'up']);
      return { created: false };
    }
    await this.ip(['link', 'add', name, 'type', 'bridge']);
    await this.setAlias(name, alias);
    await this.ip(['addr', 'add', gatewayCidr, 'dev', name]);
    await this.ip(['link', 'set', name, 'up']);
    return { created: true };
  }

  /**
   * Create a persistent tap owned by root, mark it with `alias` (its owner), attach it to
   * `bridge`, bring it up: one `ip -batch` run (one process instead of two on the create
   * path). Names and alias are checked first, since a batch is line-based text.
   */
  async createTap(name: string, bridge: string, alias: string): Promise<void> {
    for (const n of [name, bridge]) if (!IFNAME.test(n)) throw new BangerError(ErrorCode.Invalid, `invalid interface name '${n}'`);
    if (!/^[A-Za-z0-9:._-]{1,255}$/.test(alias)) throw new BangerError(ErrorCode.Invalid, `invalid interface alias '${alias}'`);
    await this.exec(['ip', '-batch', '-'], {
      env: toolEnv(),
      input: `tuntap add dev ${name} mode tap\nlink set dev ${name} alias ${alias} master ${bridge} up\n`,
    });
  }

  /** Delete a link; already gone = success. */
  async remove(name: string): Promise<void> {
    const r = await this.ip(['link', 'del', 'dev', name], true);
    if (r.exitCode !== 0 && !/Cannot find device|does not exist/i.test(r.stderr) && (await this.get(name))) {
      throw new BangerError(ErrorCode.Network, `cannot delete link ${name}: ${r.stderr.trim()}`);
    }
  }
}
