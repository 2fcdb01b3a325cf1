/**
 * The VMM names banger knows, defined once: config `vm.vmm`, `--vmm`, the RPC schema, the
 * `vms.vmm` column and the driver registry (src/vms/drivers/registry.ts) all use these.
 * A kind listed here without a registered driver is refused with E_VMM at `vm create`.
 */
export const VMM_KINDS = ['qemu', 'firecracker'] as const;
export type VmmKind = (typeof VMM_KINDS)[number];

/** What a user may ask for: a kind, or `auto` (the registry picks, saying why). */
export const VMM_CHOICES = ['auto', ...VMM_KINDS] as const;
export type VmmChoiceName = (typeof VMM_CHOICES)[number];
