import { KERNEL_FILES } from './files.js';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, symlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { BangerError, ErrorCode, errorMessage } from '../core/errors.js';
import type { Exec } from '../core/exec.js';
import { toolEnv } from '../core/exec.js';
import { dirSize } from './record.js';

/** ext4 label of a kernel's modules disk (guest: mounted read-only on /lib/modules/RELEASE). */
export const MODULES_LABEL = 'BANGERMODS';
/** File name of the modules disk in a kernel's directory. */
export const MODULES_IMAGE = KERNEL_FILES.modules;

/**
 * A kernel's whole module tree as a small read-only ext4 that every VM of the kernel gets as a
 * disk and the guest's first-boot script mounts on /lib/modules/RELEASE, so `modprobe overlay`,
 * nf_tables, br_netfilter and friends work in a VM (the initramfs carries only what booting
 * needs). `modDir` is the content of /lib/modules/RELEASE: a Debian package's unpacked
 * `lib/modules/<release>`, a bundle's `modules/` or `kernel import --modules DIR`.
 * Without modules.dep (Debian's .deb ships none: its postinst runs depmod), depmod indexes the
 * tree first, in place. No journal: the guest never writes the disk.
 */
export async function buildModulesImage(exec: Exec, modDir: string, out: string, opts: { release?: string; signal?: AbortSignal } = {}): Promise<number> {
  const release = opts.release || basename(modDir);
  if (!existsSync(join(modDir, 'modules.dep'))) await depmod(exec, modDir, release, dirname(out), opts.signal);
  const bytes = await dirSize(modDir);
  // Room for ext4 metadata and 4 KiB-block rounding of ~1,000 small files.
  const size = Math.ceil((bytes * 1.25 + 32 * 1024 * 1024) / (1024 * 1024)) * 1024 * 1024;
  await rm(out, { force: true });
  await exec(['mkfs.ext4', '-q', '-F', '-L', MODULES_LABEL, '-b', '4096', '-O', '^has_journal', '-E', 'root_owner=0:0', '-d', modDir, out, `${size / 1024}k`], {
    env: toolEnv(),
    signal: opts.signal,
  });
  return size;
}

/** depmod wants BASE/lib/modules/RELEASE: use the tree's own root when it has that shape, else a temporary root with a symlink. */
async function depmod(exec: Exec, modDir: string, release: string, scratchParent: string, signal?: AbortSignal): Promise<void> {
  const suffix = `/lib/modules/${release}`;
  let base = modDir.endsWith(suffix) ? modDir.slice(0, -suffix.length) || '/' : undefined;
  let scratch: string | undefined;
  if (!base) {
    scratch = await mkdtemp(join(scratchParent, '.depmod-'));
    await mkdir(join(scratch, 'lib', 'modules'), { recursive: true });
    await symlink(modDir, join(scratch, 'lib', 'modules', release));
    base = scratch;
  }
  try {
    await exec(['depmod', '-b', base, release], { env: toolEnv(), signal });
  } catch (e) {
    throw new BangerError(ErrorCode.Bundle, `step modules: depmod for ${release} failed: ${errorMessage(e)}`, {
      hint: 'install kmod (apt-get install kmod)',
      cause: e,
    });
  } finally {
    if (scratch) await rm(scratch, { recursive: true, force: true });
  }
}
