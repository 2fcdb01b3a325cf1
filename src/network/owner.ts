import type { DB } from '../core/db.js';

/**
 * Instance identity. Every state database holds one random id (table `instance`, migration
 * `instance-identity`); every host resource the instance creates carries it:
 *
 *   bridge   ifalias `banger:<id> root=<state root>`
 *   tap      ifalias `banger:<id>:<vm name>`
 *   NAT      rule comment `banger:<id>:vm:<vm id>` (nftables and iptables)
 *   QEMU     `-name banger:<id>:<vm name>`
 *
 * Reconcile removes only resources whose mark names its own id, so several instances (other
 * state roots, test daemons) can share one host or network namespace.
 */
export const INSTANCE_ID = /^[0-9a-f]{12}$/;

/** This database's instance id (created by the migration; stable for the database's life). */
export function instanceId(db: DB): string {
  const r = db.prepare('SELECT id FROM instance LIMIT 1').get() as { id: string } | undefined;
  if (!r || !INSTANCE_ID.test(r.id)) throw new Error('state database has no instance id (migration instance-identity missing)');
  return r.id;
}

export function bridgeAlias(instance: string, root: string): string {
  // ifalias is at most 255 bytes; the root is informative only (for error messages).
  return `banger:${instance} root=${root}`.slice(0, 255);
}

export function tapAlias(instance: string, vmName: string): string {
  return `banger:${instance}:${vmName}`;
}

/** The instance id an ifalias names, or undefined when it is not a banger mark. */
export function aliasOwner(alias: string | undefined): { instance: string; root?: string } | undefined {
  const m = /^banger:([0-9a-f]{12})(?::\S*| root=(.*))?$/.exec(alias ?? '');
  return m ? { instance: m[1]!, root: m[2] } : undefined;
}
