import { stat } from 'node:fs/promises';
import { BangerError, ErrorCode } from '../core/errors.js';
import type { VmmDriver } from './drivers/types.js';
import type { MountSpec } from './publish-spec.js';

/**
 * Host folders (`vm create --mount HOSTDIR:GUESTDIR[:ro]`), the VMM-neutral part: which VMM
 * may have them is its driver's `features.mounts`, and the driver's `folders` pick the device
 * and run what it needs on the host (QEMU: virtiofs or virtio-9p, virtiofsd;
 * drivers/qemu/mounts.ts). The guest's first-boot script mounts them on every boot from the seed
 * file `mounts` (`TAG GUESTDIR ro|rw 9p|virtiofs` lines) after modprobe from the kernel's
 * modules disk; after the first boot the VM service checks they are mounted
 * (`verifyMountsCommand`).
 */

/** Refuse mounts on a VMM without shared folders and host folders that are not existing directories; the driver picks the device. */
export async function checkMounts(mounts: MountSpec[], driver: Pick<VmmDriver, 'kind' | 'features' | 'folders'>): Promise<MountSpec[]> {
  if (!mounts.length) return mounts;
  if (!driver.features.mounts || !driver.folders) {
    throw new BangerError(ErrorCode.Invalid, `--mount is not supported on ${driver.kind} (it has no shared-folder device)`, {
      hint: "use --vmm qemu, or copy files in and out with 'banger vm cp' (NAME:/path)",
      details: { field: '--mount' },
    });
  }
  for (const m of mounts) {
    const st = await stat(m.hostDir).catch(() => undefined);
    if (!st)
      throw new BangerError(ErrorCode.NotFound, `--mount: host folder ${m.hostDir} does not exist`, {
        hint: 'create it first, or fix the path',
        details: { field: '--mount', path: m.hostDir },
      });
    if (!st.isDirectory())
      throw new BangerError(ErrorCode.Invalid, `--mount: ${m.hostDir} is not a directory`, {
        hint: 'share a folder; copy single files with banger vm cp',
        details: { field: '--mount', path: m.hostDir },
      });
  }
  return driver.folders.devices(mounts);
}

/** The seed file `mounts` (absent when there are none). Paths were validated (no whitespace). */
export function seedMountsFile(mounts: MountSpec[]): string | undefined {
  return mounts.length ? mounts.map((m) => `${m.tag} ${m.guestDir} ${m.readOnly ? 'ro' : 'rw'} ${m.kind ?? '9p'}`).join('\n') + '\n' : undefined;
}

/** Guest command (sh) that exits 0 when every mount is mounted, else prints the missing ones and exits 1. */
export function verifyMountsCommand(mounts: MountSpec[]): string {
  return `r=0; for d in ${mounts.map((m) => `'${m.guestDir}'`).join(' ')}; do grep -q " $d " /proc/mounts || { echo "not mounted: $d"; r=1; }; done; exit $r`;
}
