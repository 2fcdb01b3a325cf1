import { BangerError, ErrorCode } from '../core/errors.js';
import { normaliseAllows, splitAllows } from '../network/allow-spec.js';
import type { VmPairs, VmPolicy } from '../network/egress.js';
import { tapName } from '../network/links.js';
import { macForIp } from '../network/subnet.js';
import type { EgressMode, VmRecord, VmSpec } from './store.js';
import type { VmBase } from './vm-base.js';

/**
 * A VM's egress policy (docs/network-policy.md): which mode its create asked for, and the
 * rules network/egress.ts installs for it while it runs.
 */

/** The egress fields of a create (or update). */
export interface EgressParams {
  nat?: boolean;
  egress?: EgressMode;
  allow?: string[];
  allowVm?: string[];
}

/** True when the VM runs behind a policy (`deny` or `allow`); `nat` and no mode have none. */
export function hasPolicy(spec: Pick<VmSpec, 'egress'>): boolean {
  return spec.egress === 'deny' || spec.egress === 'allow';
}

/**
 * The spec fields for the create's flags, the config default `vm.egress` applying when no
 * flag chose. `--nat` is `--egress nat`; `--allow` implies `allow`, `--allow-vm` alone `deny`.
 * Contradictions are E_INVALID naming both flags.
 */
export function egressSpec(
  p: EgressParams,
  configDefault: EgressMode | undefined,
  vmExists: (name: string) => boolean,
): Pick<VmSpec, 'nat' | 'egress' | 'allow' | 'allowVm'> {
  const allow = normaliseAllows(p.allow ?? []);
  const allowVm = [...new Set(p.allowVm ?? [])];
  if (p.nat && p.egress && p.egress !== 'nat') throw new BangerError(ErrorCode.Invalid, `--nat is --egress nat: it contradicts --egress ${p.egress}`);
  let mode: EgressMode | undefined = p.egress ?? (p.nat ? 'nat' : undefined);
  if (allow.length) {
    if (mode && mode !== 'allow') {
      throw new BangerError(
        ErrorCode.Invalid,
        `--allow needs --egress allow (or no --egress), not ${mode === 'nat' && !p.egress ? '--nat' : `--egress ${mode}`}`,
        {
          hint: "--egress nat already reaches everything; --allow lists what a VM under 'allow' may reach",
        },
      );
    }
    mode = 'allow';
  }
  if (allowVm.length) {
    if (mode === 'nat') throw new BangerError(ErrorCode.Invalid, '--allow-vm opens a VM under a policy (deny or allow); with --nat there is no policy to open');
    mode ??= 'deny';
  }
  mode ??= configDefault;
  for (const n of allowVm) {
    if (!vmExists(n)) throw new BangerError(ErrorCode.NotFound, `--allow-vm '${n}': no such vm`, { hint: 'banger vm ls lists them' });
  }
  return {
    nat: mode === 'nat' || mode === 'allow',
    ...(mode ? { egress: mode } : {}),
    ...(mode === 'allow' ? { allow } : {}),
    ...(allowVm.length && mode !== 'nat' ? { allowVm } : {}),
  };
}

/** An http(s) URL's IPv4 literal host and port, for the policy's served exceptions; else undefined. */
function servedOf(url: string | undefined): VmPolicy['served'] {
  if (!url) return [];
  try {
    const u = new URL(url);
    if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(u.hostname)) return [];
    return [{ ip: u.hostname, port: Number(u.port || (u.protocol === 'https:' ? 443 : 80)), proto: 'tcp' }];
  } catch {
    return [];
  }
}

/** The rules of one VM (its lease must exist). */
export function policyOf(vb: VmBase, vm: Pick<VmRecord, 'id' | 'name' | 'tap' | 'mac' | 'spec'>): VmPolicy {
  const ip = vb.net.leaseOf(vm.name);
  if (!ip) throw new BangerError(ErrorCode.Internal, `vm '${vm.name}' has no address lease`);
  const sn = vb.net.subnet();
  const { cidrs, hosts } = splitAllows(vm.spec.allow ?? []);
  return {
    vmId: vm.id,
    tap: vm.tap ?? tapName(vm.id),
    ip,
    mac: vm.mac ?? macForIp(ip),
    gateway: sn.gateway,
    subnet: sn.cidr,
    allow: cidrs,
    hosts,
    served: [...servedOf(vm.spec.packageMirror), ...servedOf(vm.spec.packageProxy)],
    replyPorts: (vm.spec.ports ?? []).map((p) => p.guestPort),
  };
}

/** True when the VM's allow list names a host: its resolver is banger's forwarder on the gateway. */
export function hasHostAllows(spec: Pick<VmSpec, 'allow'>): boolean {
  return splitAllows(spec.allow ?? []).hosts.length > 0;
}

/** Every `--allow-vm` pair among the VMs that have an address (`without`: a VM leaving). */
export function pairsOf(vb: VmBase, without?: string): VmPairs {
  const leases = vb.net.allLeases();
  if (without) leases.delete(without);
  const pairs: VmPairs = [];
  for (const vm of vb.repo.list()) {
    const a = leases.get(vm.name);
    for (const other of vm.spec.allowVm ?? []) {
      const b = leases.get(other);
      if (a && b && a !== b) pairs.push([a, b]);
    }
  }
  return pairs;
}

/** Install (or replace) a running VM's policy. */
export async function applyPolicy(vb: VmBase, vm: Pick<VmRecord, 'id' | 'name' | 'tap' | 'mac' | 'spec'>): Promise<void> {
  await vb.net.applyPolicy(policyOf(vb, vm), pairsOf(vb));
}

/** Remove a VM's policy (idempotent); the pairs it took part in go with it. */
export async function removePolicy(vb: VmBase, vm: Pick<VmRecord, 'id' | 'name'>): Promise<void> {
  await vb.net.removePolicy(vm.id, pairsOf(vb, vm.name));
}
