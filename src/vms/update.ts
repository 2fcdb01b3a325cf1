import { BangerError, ErrorCode, errorMessage } from '../core/errors.js';
import { normaliseAllows } from '../network/allow-spec.js';
import { applyPolicy, egressSpec, hasPolicy, removePolicy } from './egress.js';
import { observe, view } from './queries.js';
import type { EgressMode, VmRecord, VmSpec } from './store.js';
import type { VmBase, VmView } from './vm-base.js';

/** `vm update NAME …`: what may change (the egress policy). */
export interface UpdateParams {
  name: string;
  egress?: EgressMode;
  /** Destinations to add (`--allow`). */
  allow?: string[];
  /** Destinations to take out of the allow list (`--deny`). */
  deny?: string[];
  allowVm?: string[];
  denyVm?: string[];
}

/**
 * The new egress fields: `--egress deny` or `nat` starts the lists afresh (deny has no
 * `--allow`, nat no policy at all); `--allow` on a VM under deny (or none, or nat) makes it
 * `allow`, as at create; `--deny` of a destination the list does not hold is E_INVALID.
 */
export function updatedEgress(cur: VmSpec, p: UpdateParams, vmExists: (name: string) => boolean): Pick<VmSpec, 'nat' | 'egress' | 'allow' | 'allowVm'> {
  const deny = normaliseAllows(p.deny ?? []);
  const fresh = p.egress === 'deny' || p.egress === 'nat';
  const held = fresh ? [] : (cur.allow ?? []);
  for (const d of deny) if (!held.includes(d)) throw new BangerError(ErrorCode.Invalid, `--deny '${d}': not in the allow list (${held.join(', ') || 'empty'})`);
  const allow = [...held.filter((a) => !deny.includes(a)), ...normaliseAllows(p.allow ?? [])];
  const heldVm = p.egress === 'nat' ? [] : (cur.allowVm ?? []);
  for (const d of p.denyVm ?? []) if (!heldVm.includes(d)) throw new BangerError(ErrorCode.Invalid, `--deny-vm '${d}': not allowed now`);
  const allowVm = [...heldVm.filter((n) => !(p.denyVm ?? []).includes(n)), ...(p.allowVm ?? [])];
  // Adding --allow with no --egress moves deny/none/nat to allow (egressSpec infers it).
  const mode = p.egress ?? (p.allow?.length ? undefined : cur.egress);
  const existing = (n: string) => vmExists(n) || (cur.allowVm ?? []).includes(n);
  const next = egressSpec({ egress: mode, allow, allowVm }, undefined, existing);
  if (mode === 'allow' && !next.allow) next.allow = allow;
  return next;
}

/**
 * Change a VM's egress policy. A running VM gets the new rules in one nft transaction (its
 * chain flushed and refilled, the pairs rewritten: no moment without a policy); NAT is added
 * before and removed after, so the chain alone decides what passes in between. A failure puts
 * the old spec and rules back.
 */
export async function updateVm(vb: VmBase, p: UpdateParams): Promise<VmView> {
  return vb.locks.run(p.name, async () => {
    const vm = vb.get(p.name);
    const next: VmSpec = { ...withoutEgress(vm.spec), ...updatedEgress(vm.spec, p, (n) => n !== vm.name && !!vb.repo.find(n)) };
    const running = (await observe(vb, vm)).running;
    vb.repo.setSpec(vm.name, next);
    try {
      if (running) await switchRuntime(vb, vm, vm.spec, next);
    } catch (e) {
      vb.repo.setSpec(vm.name, vm.spec);
      await switchRuntime(vb, vm, next, vm.spec).catch((e2) => vb.ctx.log.warn('restoring the old policy failed', { vm: vm.name, error: errorMessage(e2) }));
      throw e;
    }
    vb.ctx.log.info('vm egress policy changed', {
      vm: vm.name,
      from: vm.spec.egress ?? 'none',
      to: next.egress ?? 'none',
      allow: next.allow,
      allowVm: next.allowVm,
    });
    return view(vb, vb.get(vm.name), true);
  });
}

async function switchRuntime(vb: VmBase, vm: VmRecord, from: VmSpec, to: VmSpec): Promise<void> {
  const ip = vb.net.leaseOf(vm.name);
  if (!ip) throw new BangerError(ErrorCode.Internal, `vm '${vm.name}' has no address lease`);
  if (to.nat && !from.nat) await vb.net.enableNat(vm.id, ip);
  if (hasPolicy(to)) await applyPolicy(vb, { ...vm, spec: to });
  else if (hasPolicy(from)) await removePolicy(vb, vm);
  if (from.nat && !to.nat) await vb.net.disableNat(vm.id);
}

function withoutEgress(s: VmSpec): VmSpec {
  const { egress: _e, allow: _a, allowVm: _v, ...rest } = s;
  return rest;
}
