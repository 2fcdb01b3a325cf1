import { BangerError, ErrorCode } from '../../core/errors.js';
import type { VmmChoiceName } from '../../core/vmm.js';
import { kvmUsable, type HostProbe } from '../../core/host.js';
import { firecrackerDriver } from './firecracker/index.js';
import { qemuDriver } from './qemu/index.js';
import type { DriverDeps, DriverHost, DriverRegistration, VmmDriver, VmmKind } from './types.js';

export type { DriverDeps, DriverRegistration } from './types.js';

/**
 * Every VMM driver in this build, in `auto`'s order of preference (first usable wins).
 * Adding a VMM = a folder `src/vms/drivers/<kind>/` exporting a `DriverRegistration`, plus
 * one line here.
 */
export const DRIVERS: readonly DriverRegistration[] = [firecrackerDriver, qemuDriver];

/** The VMM a VM will use, with the reason shown by `vm show` (stored in vms.vmm_reason). */
export interface VmmChoice {
  kind: VmmKind;
  kvm: boolean;
  reason: string;
}

/**
 * The drivers of one daemon (or one test), in preference order. `select` implements `auto`:
 * each driver is probed in order; the reason names every driver that was passed over and why,
 * then the chosen one and how it runs ("auto: firecracker: binary not found → qemu; accel tcg
 * (KVM not usable: …)"). An explicit request for an unusable driver is E_VMM with the driver's
 * own words; for a kind with no registered driver, E_VMM saying so.
 */
export class DriverRegistry {
  private readonly byKind = new Map<string, VmmDriver>();

  constructor(drivers: Iterable<VmmDriver>) {
    for (const d of drivers) {
      if (this.byKind.has(d.kind)) throw new BangerError(ErrorCode.Internal, `two drivers registered for '${d.kind}'`);
      this.byKind.set(d.kind, d);
    }
  }

  /** The build's drivers (DRIVERS), made with the daemon's exec and binaries. */
  static fromBuild(deps: DriverDeps): DriverRegistry {
    return new DriverRegistry(DRIVERS.map((r) => r.create(deps)));
  }

  kinds(): VmmKind[] {
    return [...this.byKind.values()].map((d) => d.kind);
  }

  /** Every registered driver, in preference order. */
  all(): VmmDriver[] {
    return [...this.byKind.values()];
  }

  has(kind: string): boolean {
    return this.byKind.has(kind);
  }

  /** The driver of `kind`; E_VMM when none is registered (e.g. a row written by another build). */
  get(kind: string): VmmDriver {
    const d = this.byKind.get(kind);
    if (!d) throw noDriver(kind, this.kinds());
    return d;
  }

  /** Probe KVM once and pick the VMM (see the class comment). */
  async select(requested: VmmChoiceName, probe: HostProbe): Promise<VmmChoice> {
    const host: DriverHost = { probe, kvm: await kvmUsable(probe) };
    if (requested !== 'auto') {
      const d = this.get(requested);
      const r = await d.probe(host);
      if (!r.usable) throw new BangerError(ErrorCode.Vmm, r.error ?? `--vmm ${requested}: ${r.reason}`, { hint: r.hint, details: { vmm: requested } });
      return { kind: d.kind, kvm: r.kvm, reason: `requested ${d.kind}; ${r.reason}` };
    }
    const passed: string[] = [];
    let first: { error?: string; reason: string; hint?: string } | undefined;
    for (const d of this.byKind.values()) {
      const r = await d.probe(host);
      if (r.usable && !r.explicitOnly) return { kind: d.kind, kvm: r.kvm, reason: `auto: ${passed.map((p) => `${p} → `).join('')}${d.kind}; ${r.reason}` };
      passed.push(`${d.kind}: ${r.reason}`);
      first ??= r;
    }
    throw new BangerError(ErrorCode.Vmm, `no usable VMM: ${passed.join('; ') || 'no driver is registered'}`, { hint: first?.hint, details: { vmm: 'auto' } });
  }
}

function noDriver(kind: string, kinds: string[]): BangerError {
  return new BangerError(ErrorCode.Vmm, `no '${kind}' driver is registered in this build (registered: ${kinds.join(', ') || 'none'})`, {
    hint: kinds.length ? `use --vmm ${kinds[0]}` : undefined,
    details: { vmm: kind },
  });
}
