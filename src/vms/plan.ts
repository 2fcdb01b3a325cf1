import { BangerError, ErrorCode } from '../core/errors.js';
import type { VmNetwork } from '../network/service.js';
import type { VmmChoice } from './drivers/registry.js';
import type { SnapshotFiles } from './drivers/types.js';
import type { DiskSpec, KernelFiles, VmHandle, VmmDriver } from './drivers/types.js';
import type { ImageView } from './deps.js';
import type { VmFiles } from './files.js';
import type { VmSpec } from './store.js';

/**
 * Everything a boot needs, derived once and carried in memory (no re-reading the record, the
 * kernel, KVM or the network). `vm create` builds it before anything is made (`net` and `ip`
 * arrive with the lease in the record step, `rootDisk` from the disk step, `hostKey` from the
 * seed step); `vm start` builds it from the row. One `launch(plan)` serves both.
 */
export interface BootPlan {
  name: string;
  id: string;
  /** The image (create only; start boots the VM's own disk). */
  image?: ImageView;
  kernel: KernelFiles;
  driver: VmmDriver;
  /** The VMM, whether it runs with KVM, and why it was chosen (recorded as vms.vmm_reason). */
  choice: VmmChoice;
  files: VmFiles;
  handle: VmHandle;
  spec: VmSpec;
  /** The leased address and the network around it (described once). */
  net?: VmNetwork;
  /** The root disk `prepareRootDisk` returned (create), else the spec's. */
  rootDisk?: DiskSpec;
  /** The host key pair made for this VM (create only; seeded and pinned, never read back). */
  hostKey?: { priv: string; pub: string };
  /** `vm create --from` / `vm fork`: the saved state it is restored from. */
  from?: SnapshotFiles;
}

/** The plan's network (E_INTERNAL before the record step leased an address). */
export function planNet(plan: BootPlan): VmNetwork {
  if (!plan.net) throw new BangerError(ErrorCode.Internal, `vm '${plan.name}' has no IP lease`);
  return plan.net;
}
