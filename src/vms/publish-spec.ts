import { isIP } from 'node:net';
import { isAbsolute, normalize } from 'node:path';
import { BangerError, ErrorCode } from '../core/errors.js';
import type { MountSpec, PortSpec } from '../core/shapes/vm.js';

/** A published port (`vm create -p`: the guest's GUESTPORT reachable at HOSTIP:HOSTPORT) and a shared host folder (`--mount`). */
export type { MountSpec, PortSpec } from '../core/shapes/vm.js';

function invalid(field: string, spec: string, why: string, hint: string): BangerError {
  return new BangerError(ErrorCode.Invalid, `${field} '${spec}': ${why}`, { hint, details: { field, value: spec } });
}

const PORT_HINT = 'write -p [HOSTIP:]HOSTPORT:GUESTPORT[/tcp], e.g. -p 8080:80 or -p 127.0.0.1:8080:80/tcp';

function port(field: string, spec: string, what: string, v: string): number {
  if (!/^\d{1,5}$/.test(v)) throw invalid(field, spec, `${what} '${v}' is not a port number`, PORT_HINT);
  const n = Number(v);
  if (n < 1 || n > 65535) throw invalid(field, spec, `${what} ${n} is outside 1-65535`, PORT_HINT);
  return n;
}

/**
 * Parse `[HOSTIP:]HOSTPORT:GUESTPORT[/tcp]` (HOSTIP defaults to 127.0.0.1; an IPv6 HOSTIP is
 * written in brackets, `[::1]:8080:80`). Only tcp. Throws E_INVALID naming `-p` and the part.
 */
export function parsePortSpec(spec: string, field = '-p'): PortSpec {
  let rest = spec.trim();
  let proto = 'tcp';
  const slash = rest.lastIndexOf('/');
  if (slash >= 0) {
    proto = rest.slice(slash + 1).toLowerCase();
    rest = rest.slice(0, slash);
  }
  if (proto !== 'tcp') throw invalid(field, spec, `protocol '${proto}' is not supported (only tcp)`, PORT_HINT);
  let hostIp = '127.0.0.1';
  const v6 = /^\[([^\]]*)\]:(.*)$/.exec(rest);
  if (v6) {
    hostIp = v6[1]!;
    rest = v6[2]!;
    if (isIP(hostIp) !== 6) throw invalid(field, spec, `HOSTIP '${hostIp}' is not an IPv6 address`, PORT_HINT);
  }
  const parts = rest.split(':');
  if (!v6 && parts.length === 3) {
    hostIp = parts.shift()!;
    if (isIP(hostIp) !== 4) throw invalid(field, spec, `HOSTIP '${hostIp}' is not an IPv4 address`, PORT_HINT);
  }
  if (parts.length !== 2) throw invalid(field, spec, 'expected HOSTPORT:GUESTPORT', PORT_HINT);
  return { hostIp, hostPort: port(field, spec, 'HOSTPORT', parts[0]!), guestPort: port(field, spec, 'GUESTPORT', parts[1]!), proto: 'tcp' };
}

/** Parse every `-p`; two specs with one host address and port are refused. */
export function parsePortSpecs(specs: readonly string[]): PortSpec[] {
  const out = specs.map((s) => parsePortSpec(s));
  const seen = new Set<string>();
  out.forEach((p, i) => {
    const k = portKey(p);
    if (seen.has(k)) throw invalid('-p', specs[i]!, `host port ${k} is published twice`, 'publish each host address and port once');
    seen.add(k);
  });
  return out;
}

/** `127.0.0.1:8080` / `[::1]:8080`: how a port is named in messages and tables. */
export function portKey(p: Pick<PortSpec, 'hostIp' | 'hostPort'>): string {
  return isIP(p.hostIp) === 6 ? `[${p.hostIp}]:${p.hostPort}` : `${p.hostIp}:${p.hostPort}`;
}

/** `127.0.0.1:8080->80/tcp`, as docker prints it. */
export function formatPort(p: PortSpec): string {
  return `${portKey(p)}->${p.guestPort}/${p.proto}`;
}

const MOUNT_HINT = 'write --mount HOSTDIR:GUESTDIR[:ro] with absolute paths, e.g. --mount /srv/data:/data:ro';
/** Characters a mount path may not contain: the separator, and what the seed list and fstab-style options cannot carry. */
const BAD_PATH = /[:,\s\\\0'"`$]/;

/**
 * Parse `HOSTDIR:GUESTDIR[:ro|:rw]` (both absolute; no ':' ',' whitespace or backslash in
 * either; no '..' segment). Pure: whether HOSTDIR exists is checked by host-folders.ts.
 */
export function parseMountSpec(spec: string, index: number, field = '--mount'): MountSpec {
  const parts = spec.split(':');
  let readOnly = false;
  if (parts.length === 3) {
    const mode = parts.pop()!;
    if (mode !== 'ro' && mode !== 'rw') throw invalid(field, spec, `mode '${mode}' must be ro or rw`, MOUNT_HINT);
    readOnly = mode === 'ro';
  }
  if (parts.length !== 2) throw invalid(field, spec, `expected HOSTDIR:GUESTDIR[:ro] (paths may not contain ':')`, MOUNT_HINT);
  const [hostDir, guestDir] = parts as [string, string];
  for (const [what, p] of [
    ['HOSTDIR', hostDir],
    ['GUESTDIR', guestDir],
  ] as const) {
    if (!p) throw invalid(field, spec, `${what} is empty`, MOUNT_HINT);
    if (!isAbsolute(p)) throw invalid(field, spec, `${what} '${p}' is not an absolute path`, MOUNT_HINT);
    if (BAD_PATH.test(p)) throw invalid(field, spec, `${what} '${p}' contains one of : , whitespace \\ ' " \` $`, MOUNT_HINT);
    if (p.split('/').includes('..')) throw invalid(field, spec, `${what} '${p}' contains '..'`, MOUNT_HINT);
  }
  const g = normalize(guestDir).replace(/\/+$/, '') || '/';
  if (g === '/' || /^\/(proc|sys|dev|run|etc|boot|usr|lib|lib64|bin|sbin)(\/|$)/.test(g)) {
    throw invalid(field, spec, `GUESTDIR '${guestDir}' would hide a system directory`, 'mount on a new directory such as /mnt/data or /srv/data');
  }
  return { hostDir: normalize(hostDir), guestDir: g, readOnly, tag: `banger${index}` };
}

/** Parse every `--mount`; two mounts on one GUESTDIR are refused. */
export function parseMountSpecs(specs: readonly string[]): MountSpec[] {
  const out = specs.map((s, i) => parseMountSpec(s, i));
  const seen = new Set<string>();
  out.forEach((m, i) => {
    if (seen.has(m.guestDir)) throw invalid('--mount', specs[i]!, `GUESTDIR ${m.guestDir} is mounted twice`, 'give each mount its own GUESTDIR');
    seen.add(m.guestDir);
  });
  return out;
}
