import { rm } from 'node:fs/promises';
import { dirname, basename } from 'node:path';
import { BangerError, ErrorCode, errorMessage } from '../../core/errors.js';
import type { Exec } from '../../core/exec.js';
import { toolEnv } from '../../core/exec.js';
import { dirSize } from '../record.js';

/** ext4 label of a kernel's modules disk (guest: mounted read-only on /lib/modules/RELEASE). */
export const MODULES_LABEL = 'BANGERMODS';
/** File name of the modules disk in a kernel's directory. */
export const MODULES_IMAGE = 'modules.ext4';

/**
 * The kernel's whole module tree as a small read-only ext4 the guest mounts on
 * /lib/modules/RELEASE, so `modprobe overlay`, nf_tables, br_netfilter and friends work in a
 * VM (the initramfs carries only the few it needs to boot). `modDir` is `<root>/lib/modules/
 * <release>` of an unpacked kernel package; Debian's .deb ships no modules.dep (its postinst
 * runs depmod), so depmod runs first against that root. No journal: the guest never writes it.
 */
export async function buildModulesImage(exec: Exec, modDir: string, out: string, signal?: AbortSignal): Promise<number> {
  const release = basename(modDir);
  const root = dirname(dirname(dirname(modDir))); // <root>/lib/modules/<release>
  try {
    await exec(['depmod', '-b', root, release], { env: toolEnv(), signal });
  } catch (e) {
    throw new BangerError(ErrorCode.Bundle, `step modules: depmod for ${release} failed: ${errorMessage(e)}`, { hint: 'install kmod (apt-get install kmod)', cause: e });
  }
  const bytes = await dirSize(modDir);
  // Room for ext4 metadata and 4 KiB-block rounding of ~1,000 small files.
  const size = Math.ceil((bytes * 1.25 + 32 * 1024 * 1024) / (1024 * 1024)) * 1024 * 1024;
  await rm(out, { force: true });
  await exec(['mkfs.ext4', '-q', '-F', '-L', MODULES_LABEL, '-b', '4096', '-O', '^has_journal', '-E', 'root_owner=0:0', '-d', modDir, out, `${size / 1024}k`], { env: toolEnv(), signal });
  return size;
}
