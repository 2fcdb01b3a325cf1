import { BangerError, ErrorCode } from '../core/errors.js';
import { intToIp, ipToInt } from './subnet.js';

/**
 * `--allow` destinations of a VM's egress policy (network-policy.md). Pure, no I/O.
 *
 *   CIDR[:PORT[/PROTO]]   10.1.0.0/16, 192.0.2.7:443, 192.0.2.7:53/udp (a bare address is /32;
 *                         a port without a protocol is tcp; no port: every protocol and port)
 *
 * IPv4 only: a guest with a policy sends no IPv6 at all.
 */
export interface AllowRule {
  /** Network address/prefix, normalised (192.0.2.7/32). */
  cidr: string;
  port?: number;
  proto?: 'tcp' | 'udp';
}

/** A hostname allow: answered by the forwarder, its A records opened for their TTL. */
export interface HostAllow {
  /** Lower case, no trailing dot. */
  host: string;
  port?: number;
}

const HOST_PORT = /^([A-Za-z0-9.-]{1,253}?)\.?(?::(\d{1,5})(?:\/(tcp))?)?$/;
const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;

/** True when `spec` is a hostname allow rather than a CIDR one (it has a letter before any ':'). */
export function isHostAllow(spec: string): boolean {
  return /[A-Za-z]/.test(spec.trim().split(':')[0]!);
}

/** A valid DNS name (lower-cased, no trailing dot) or undefined: letters, digits, '-', 1-63 per label, 253 in all, two labels at least. */
export function normaliseHost(name: string): string | undefined {
  const h = name.toLowerCase().replace(/\.$/, '');
  if (h.length < 1 || h.length > 253) return undefined;
  const labels = h.split('.');
  if (labels.length < 2 || !labels.every((l) => LABEL.test(l)) || !/[a-z]/.test(labels.at(-1)!)) return undefined;
  return h;
}

/** Parse one hostname `--allow` value; throws E_INVALID naming the flag. */
export function parseHostAllow(spec: string): HostAllow {
  const m = HOST_PORT.exec(spec.trim());
  const host = m ? normaliseHost(m[1]!) : undefined;
  if (!m || !host) {
    throw new BangerError(ErrorCode.Invalid, `--allow '${spec}' is not HOSTNAME[:PORT] (a DNS name of two labels or more; TCP only)`, {
      hint: 'examples: --allow pypi.org:443, --allow example.com',
    });
  }
  if (m[2] === undefined) return { host };
  const port = Number(m[2]);
  if (port < 1 || port > 65535) throw new BangerError(ErrorCode.Invalid, `--allow '${spec}': port ${port} is not 1-65535`);
  return { host, port };
}

/** The canonical text of a hostname allow. */
export function formatHostAllow(h: HostAllow): string {
  return h.port === undefined ? h.host : `${h.host}:${h.port}/tcp`;
}

const CIDR_PORT = /^(\d{1,3}(?:\.\d{1,3}){3})(?:\/(\d{1,2}))?(?::(\d{1,5})(?:\/(tcp|udp))?)?$/;

/** Parse one `--allow` value; throws E_INVALID naming the flag. */
export function parseAllow(spec: string): AllowRule {
  const m = CIDR_PORT.exec(spec.trim());
  if (!m) {
    throw new BangerError(ErrorCode.Invalid, `--allow '${spec}' is not CIDR[:PORT[/PROTO]]`, {
      hint: 'examples: --allow 192.0.2.0/24, --allow 192.0.2.7:443, --allow 192.0.2.7:53/udp',
    });
  }
  const prefix = m[2] === undefined ? 32 : Number(m[2]);
  if (prefix > 32) throw new BangerError(ErrorCode.Invalid, `--allow '${spec}': prefix /${prefix} is past /32`);
  if (m[1]!.split('.').some((o) => Number(o) > 255)) throw new BangerError(ErrorCode.Invalid, `--allow '${spec}': '${m[1]}' is not an IPv4 address`);
  const addr = ipToInt(m[1]!);
  const size = 2 ** (32 - prefix);
  const network = addr - (addr % size);
  const rule: AllowRule = { cidr: `${intToIp(network)}/${prefix}` };
  if (m[3] !== undefined) {
    const port = Number(m[3]);
    if (port < 1 || port > 65535) throw new BangerError(ErrorCode.Invalid, `--allow '${spec}': port ${port} is not 1-65535`);
    rule.port = port;
    rule.proto = (m[4] as 'tcp' | 'udp' | undefined) ?? 'tcp';
  }
  return rule;
}

/** The canonical text of a rule (what the VM's spec stores and `vm show` lists). */
export function formatAllow(r: AllowRule): string {
  return r.port === undefined ? r.cidr : `${r.cidr}:${r.port}/${r.proto ?? 'tcp'}`;
}

/** Parse and canonicalise a list (CIDR and hostname allows), dropping duplicates (order kept). */
export function normaliseAllows(specs: string[]): string[] {
  return [...new Set(specs.map((s) => (isHostAllow(s) ? formatHostAllow(parseHostAllow(s)) : formatAllow(parseAllow(s)))))];
}

/** Split a stored allow list into its CIDR rules and its hostname allows. */
export function splitAllows(specs: string[]): { cidrs: AllowRule[]; hosts: HostAllow[] } {
  const cidrs: AllowRule[] = [];
  const hosts: HostAllow[] = [];
  for (const s of specs) {
    if (isHostAllow(s)) hosts.push(parseHostAllow(s));
    else cidrs.push(parseAllow(s));
  }
  return { cidrs, hosts };
}
