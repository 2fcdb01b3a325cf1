import { BangerError, ErrorCode } from '../core/errors.js';

/**
 * IPv4 subnet arithmetic for the VM bridge. Pure functions, no I/O.
 * The gateway (the bridge's own address) is the first host address; guests get the
 * following ones; the network and broadcast addresses are never handed out.
 */
export interface Subnet {
  /** Network address as a 32-bit unsigned integer. */
  network: number;
  prefix: number;
  /** Dotted netmask, e.g. 255.255.255.0 (for the kernel `ip=` argument). */
  netmask: string;
  gateway: string;
  /** First and last address a guest may get (inclusive). */
  firstGuest: number;
  lastGuest: number;
  cidr: string;
}

export function ipToInt(ip: string): number {
  const parts = ip.split('.');
  if (parts.length !== 4 || parts.some((p) => !/^\d{1,3}$/.test(p) || Number(p) > 255)) {
    throw new BangerError(ErrorCode.Invalid, `invalid IPv4 address '${ip}'`);
  }
  return parts.reduce((acc, p) => acc * 256 + Number(p), 0);
}

export function intToIp(n: number): string {
  return [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join('.');
}

/** Parse "172.16.0.0/24" (config field `network.subnet`). Needs at least 2 guest addresses. */
export function parseSubnet(cidr: string): Subnet {
  const m = /^(\d+\.\d+\.\d+\.\d+)\/(\d{1,2})$/.exec(cidr);
  if (!m) throw new BangerError(ErrorCode.Invalid, `config field 'network.subnet': '${cidr}' is not an IPv4 CIDR`, { hint: 'example: 172.16.0.0/24' });
  const prefix = Number(m[2]);
  if (prefix < 8 || prefix > 29) {
    throw new BangerError(ErrorCode.Invalid, `config field 'network.subnet': prefix /${prefix} must be between /8 and /29`, { hint: 'example: 172.16.0.0/24' });
  }
  const size = 2 ** (32 - prefix);
  const addr = ipToInt(m[1]!);
  const network = addr - (addr % size);
  const maskInt = 2 ** 32 - size;
  return {
    network,
    prefix,
    netmask: intToIp(maskInt),
    gateway: intToIp(network + 1),
    firstGuest: network + 2,
    lastGuest: network + size - 2,
    cidr: `${intToIp(network)}/${prefix}`,
  };
}

/** The lowest guest address not in `used`, or undefined when the subnet is full. */
export function firstFreeIp(subnet: Subnet, used: Iterable<string>): string | undefined {
  const taken = new Set<number>();
  for (const u of used) taken.add(ipToInt(u));
  for (let n = subnet.firstGuest; n <= subnet.lastGuest; n++) if (!taken.has(n)) return intToIp(n);
  return undefined;
}

/** A locally administered MAC derived from the guest IP: 06:00:AC:10:00:02 for 172.16.0.2. */
export function macForIp(ip: string): string {
  const n = ipToInt(ip);
  const b = [24, 16, 8, 0].map((s) => (Math.floor(n / 2 ** s) % 256).toString(16).padStart(2, '0'));
  return ['06', '00', ...b].join(':').toUpperCase();
}
