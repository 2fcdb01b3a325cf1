import type { DB } from '../core/db.js';
import type { OnExpire, VmRecord, VmSpec, VmState } from '../core/shapes/vm.js';
import type { VmmKind } from '../core/vmm.js';

export type { EgressMode, OnExpire, PortLimits, VmRecord, VmSpec, VmState } from '../core/shapes/vm.js';

interface Row {
  name: string;
  id: string;
  image_name: string;
  kernel_name: string;
  spec_json: string;
  desired_state: string;
  state: string;
  vmm: string;
  vmm_reason: string;
  pid: number | null;
  tap: string | null;
  mac: string | null;
  created_at: string;
  started_at: string | null;
  create_done: number;
  expires_at: string | null;
  on_expire: string | null;
}

const SELECT = 'SELECT v.* FROM vms v';

/** What the repository asks the network domain for: the address leased to a VM (its table). */
export interface LeaseReader {
  leaseOf(vmName: string): string | undefined;
  /** Every lease, by VM name (one query for a list). */
  allLeases(): Map<string, string>;
}

function toRecord(r: Row, ip: string | null): VmRecord {
  return {
    name: r.name,
    id: r.id,
    image: r.image_name,
    kernel: r.kernel_name,
    spec: JSON.parse(r.spec_json) as VmSpec,
    desiredState: r.desired_state === 'running' ? 'running' : 'stopped',
    state: r.state as VmState,
    vmm: r.vmm as VmmKind,
    vmmReason: r.vmm_reason,
    pid: r.pid,
    tap: r.tap,
    mac: r.mac,
    ip,
    createdAt: r.created_at,
    startedAt: r.started_at,
    createDone: r.create_done !== 0,
    expiresAt: r.expires_at,
    onExpire: r.on_expire === 'rm' || r.on_expire === 'stop' ? r.on_expire : null,
  };
}

/** The `vms` table. A VM's address comes from the network domain's leases (`LeaseReader`). */
export class VmRepo {
  constructor(
    private readonly db: DB,
    private readonly leases: LeaseReader,
  ) {}

  find(name: string): VmRecord | undefined {
    const r = this.db.prepare(`${SELECT} WHERE v.name = ?`).get(name) as Row | undefined;
    return r ? toRecord(r, this.leases.leaseOf(r.name) ?? null) : undefined;
  }

  list(): VmRecord[] {
    const ips = this.leases.allLeases();
    return (this.db.prepare(`${SELECT} ORDER BY v.created_at, v.name`).all() as Row[]).map((r) => toRecord(r, ips.get(r.name) ?? null));
  }

  /** Insert a row for a create in progress (`create_done` 0 until `createDone(name)`). */
  insert(v: Omit<VmRecord, 'ip' | 'pid' | 'startedAt' | 'createDone' | 'expiresAt' | 'onExpire'> & Partial<Pick<VmRecord, 'expiresAt' | 'onExpire'>>): void {
    this.db
      .prepare(
        'INSERT INTO vms (name, id, image_name, kernel_name, spec_json, desired_state, state, vmm, vmm_reason, tap, mac, created_at, create_done, expires_at, on_expire) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?)',
      )
      .run(
        v.name,
        v.id,
        v.image,
        v.kernel,
        JSON.stringify(v.spec),
        v.desiredState,
        v.state,
        v.vmm,
        v.vmmReason,
        v.tap,
        v.mac,
        v.createdAt,
        v.expiresAt ?? null,
        v.onExpire ?? null,
      );
  }

  /** Set (or with null clear) a VM's deadline and what it does. */
  setExpiry(name: string, expiresAt: string | null, onExpire: OnExpire | null): void {
    this.db.prepare('UPDATE vms SET expires_at = ?, on_expire = ? WHERE name = ?').run(expiresAt, expiresAt ? onExpire : null, name);
  }

  /** Replace a VM's spec (`vm update`: the egress policy). */
  setSpec(name: string, spec: VmSpec): void {
    this.db.prepare('UPDATE vms SET spec_json = ? WHERE name = ?').run(JSON.stringify(spec), name);
  }

  /** The create that made this row finished (or the row was adopted after a crash). */
  createDone(name: string): void {
    this.db.prepare('UPDATE vms SET create_done = 1 WHERE name = ?').run(name);
  }

  /** Update the observed state; fields left undefined keep their value (one UPDATE, no read). */
  setState(name: string, fields: { state: VmState; desiredState?: 'running' | 'stopped'; pid?: number | null; startedAt?: string | null }): void {
    this.db
      .prepare(
        'UPDATE vms SET state = ?, desired_state = COALESCE(?, desired_state), pid = CASE WHEN ? THEN ? ELSE pid END, started_at = CASE WHEN ? THEN ? ELSE started_at END WHERE name = ?',
      )
      .run(
        fields.state,
        fields.desiredState ?? null,
        fields.pid === undefined ? 0 : 1,
        fields.pid ?? null,
        fields.startedAt === undefined ? 0 : 1,
        fields.startedAt ?? null,
        name,
      );
  }

  /** Delete the VM row (its lease is the network domain's: release it first, see `Leases`). */
  delete(name: string): void {
    this.db.prepare('DELETE FROM vms WHERE name = ?').run(name);
  }
}
