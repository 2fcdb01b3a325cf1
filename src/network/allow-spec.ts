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

/** Parse and canonicalise a list, dropping duplicates (order kept). */
export function normaliseAllows(specs: string[]): string[] {
  return [...new Set(specs.map((s) => formatAllow(parseAllow(s))))];
}
