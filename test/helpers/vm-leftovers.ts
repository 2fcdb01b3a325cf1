import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { openDatabase } from '../../src/core/db.js';
import { nsRun } from './netns.js';

/**
 * Host-side truth about one banger instance's VMs, read straight from the kernel, the
 * firewall, /proc, SQLite and the state root (never through banger), for "nothing left" checks
 * made right after a CLI call returns.
 */

/** The instance id a bridge carries in its ifalias (`banger:<id> root=…`). */
export function bridgeInstance(ns: string, bridge: string): string {
  const [l] = JSON.parse(nsRun(ns, ['ip', '-d', '-j', 'link', 'show', 'dev', bridge])) as { ifalias?: string }[];
  const m = /^banger:([0-9a-f]{12})/.exec(l?.ifalias ?? '');
  if (!m) throw new Error(`bridge ${bridge} carries no banger mark (ifalias ${l?.ifalias})`);
  return m[1]!;
}

/** Taps (name → alias) in the namespace. */
export function tapAliases(ns: string): Map<string, string> {
  const links = JSON.parse(nsRun(ns, ['ip', '-d', '-j', 'link', 'show'])) as { ifname: string; ifalias?: string; linkinfo?: { info_kind?: string } }[];
  return new Map(links.filter((l) => l.linkinfo?.info_kind === 'tun').map((l) => [l.ifname, l.ifalias ?? '']));
}

/** The tap an instance made for VM `name` (by its mark), if any. */
export function tapOf(ns: string, instance: string, name: string): string | undefined {
  for (const [tap, alias] of tapAliases(ns)) if (alias === `banger:${instance}:${name}`) return tap;
  return undefined;
}

/** VM ids with NAT rules marked by `instance`, in nftables and iptables (both tables). */
export function natVmIds(ns: string, instance: string): string[] {
  const text = [nsRun(ns, ['nft', 'list', 'ruleset']), nsRun(ns, ['iptables', '-w', '-S']), nsRun(ns, ['iptables', '-w', '-t', 'nat', '-S'])].join('\n');
  return [...new Set([...text.matchAll(new RegExp(`banger:${instance}:vm:([0-9a-f]+)`, 'g'))].map((m) => m[1]!))].sort();
}

/** Live (not zombie) processes whose command line carries `marker`. */
export function processesWith(marker: string): number[] {
  const out: number[] = [];
  for (const p of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    try {
      if (
        !readFileSync(`/proc/${p}/cmdline`, 'utf8')
          .split('\0')
          .some((a) => a.includes(marker))
      )
        continue;
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      if (!/^[ZX]/.test(stat.slice(stat.lastIndexOf(')') + 2))) out.push(Number(p));
    } catch {
      /* gone */
    }
  }
  return out;
}

/** Rows (vms, ip_leases) of the instance's database, read-only. */
export function dbRows(root: string): { vms: { name: string; id: string }[]; leases: { ip: string; vm_name: string }[] } {
  const db = openDatabase(join(root, 'banger.db'), { readOnly: true });
  try {
    return {
      vms: db.prepare('SELECT name, id FROM vms').all() as { name: string; id: string }[],
      leases: db.prepare('SELECT ip, vm_name FROM ip_leases').all() as { ip: string; vm_name: string }[],
    };
  } finally {
    db.close();
  }
}

/**
 * Everything VM `name` of an instance could have left: its tap, NAT rules no row owns, its QEMU
 * process, its rows, its directory, its pinned host key, seed staging dirs. Returns a list of
 * findings (empty = nothing left).
 */
export function leftovers(ns: string, root: string, instance: string, name: string): string[] {
  const found: string[] = [];
  const tap = tapOf(ns, instance, name);
  if (tap) found.push(`tap ${tap}`);
  const rows = dbRows(root);
  const known = new Set(rows.vms.map((v) => v.id));
  for (const id of natVmIds(ns, instance)) if (!known.has(id)) found.push(`NAT rules of unknown vm id ${id}`);
  for (const pid of processesWith(`banger:${instance}:${name},`)) found.push(`process ${pid}`);
  if (rows.vms.some((v) => v.name === name)) found.push('vms row');
  if (rows.leases.some((l) => l.vm_name === name)) found.push('ip_leases row');
  if (existsSync(join(root, 'vms', name))) found.push(`directory vms/${name}`);
  const kh = join(root, 'ssh', 'known_hosts');
  if (existsSync(kh) && new RegExp(`[ ,]${name.replace(/\./g, '\\.')}[ ,]`).test(readFileSync(kh, 'utf8'))) found.push('pinned host key');
  const tmp = join(root, 'tmp');
  if (existsSync(tmp)) for (const n of readdirSync(tmp).filter((x) => x.startsWith('seed-'))) found.push(`tmp/${n}`);
  return found;
}
