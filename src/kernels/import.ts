import { KERNEL_FILES } from './files.js';
import { copyFile, cp, readdir, rm, stat } from 'node:fs/promises';
import { isAbsolute, join, relative } from 'node:path';
import { BangerError, ErrorCode } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import { staysInside, type BundleFiles } from './extract.js';
import { identifyKernelImage, type KernelImageKind } from './identify.js';
import type { KernelManifest } from './record.js';

export interface ImportOptions {
  /** ELF vmlinux or bzImage (detected by magic). */
  vmlinux: string;
  initrd?: string;
  /** A module tree, copied as modules/ (symlinks kept when they stay inside, dropped otherwise). */
  modules?: string;
  kernelVersion?: string;
  distro?: string;
  arch?: string;
  force?: boolean;
  signal?: AbortSignal;
}

export interface StagedImport {
  kind: KernelImageKind;
  files: BundleFiles;
  meta: Omit<KernelManifest, 'vmlinuxSha256' | 'importedAt' | 'files'>;
  /** Symlinks in the module tree that pointed outside it (e.g. build -> /usr/src/…), not copied. */
  droppedLinks: string[];
}

/**
 * Validate the local files of `kernel import` and copy them into `staging`: an ELF lands as
 * `vmlinux`, a bzImage as `vmlinuz`. Errors name the flag and the file. The caller removes
 * `staging` on failure.
 */
export async function stageImport(name: string, opts: ImportOptions, staging: string, log: Logger): Promise<StagedImport> {
  const vmlinux = await checkPath('--vmlinux', opts.vmlinux, 'file');
  const initrd = opts.initrd === undefined ? undefined : await checkPath('--initrd', opts.initrd, 'file');
  const modules = opts.modules === undefined ? undefined : await checkPath('--modules', opts.modules, 'dir');
  const info = await identifyKernelImage(vmlinux);
  if (!info) {
    throw new BangerError(
      ErrorCode.Invalid,
      `kernel import ${name}: --vmlinux ${vmlinux} is not a Linux kernel image: neither a bzImage (no 'HdrS' boot header) nor a vmlinux (an executable ELF with a 'Linux version' banner)`,
      {
        hint: 'pass the uncompressed vmlinux (ELF) or a bzImage (vmlinuz) of a Linux kernel',
        details: { field: 'vmlinux', path: vmlinux },
      },
    );
  }
  const files: BundleFiles = {};
  const dest = join(staging, info.kind === 'elf' ? KERNEL_FILES.vmlinux : KERNEL_FILES.vmlinuz);
  await copyFile(vmlinux, dest);
  if (info.kind === 'elf') files.vmlinux = dest;
  else files.vmlinuz = dest;
  if (initrd) await copyFile(initrd, (files.initrd = join(staging, KERNEL_FILES.initrd)));
  const droppedLinks: string[] = [];
  if (modules) {
    files.modulesDir = join(staging, 'modules');
    await cp(modules, files.modulesDir, { recursive: true, verbatimSymlinks: true });
    for (const link of await symlinksUnder(files.modulesDir)) {
      const rel = relative(staging, link);
      if (!(await staysInside(staging, rel))) {
        await rm(link, { force: true });
        droppedLinks.push(rel);
        log.warn('import: dropped a symlink that points outside the kernel directory', { kernel: name, link: rel });
      }
    }
  }
  return {
    kind: info.kind,
    files,
    droppedLinks,
    meta: {
      name,
      distro: opts.distro ?? 'custom',
      arch: opts.arch ?? info.arch ?? 'x86_64',
      kernelVersion: opts.kernelVersion ?? info.version ?? 'unknown',
      source: `import:${vmlinux}`,
    },
  };
}

async function symlinksUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isSymbolicLink()) out.push(p);
    else if (e.isDirectory()) out.push(...(await symlinksUnder(p)));
  }
  return out;
}

async function checkPath(flag: string, path: string, kind: 'file' | 'dir'): Promise<string> {
  const field = flag.slice(2);
  if (!isAbsolute(path)) throw new BangerError(ErrorCode.Invalid, `${flag} ${path}: must be an absolute path`, { details: { field } });
  const st = await stat(path).catch(() => undefined);
  if (!st)
    throw new BangerError(ErrorCode.NotFound, `${flag} ${path}: no such ${kind === 'file' ? 'file' : 'directory'}`, {
      hint: 'check the path',
      details: { field, path },
    });
  if (kind === 'file' && !st.isFile()) throw new BangerError(ErrorCode.Invalid, `${flag} ${path}: not a regular file`, { details: { field, path } });
  if (kind === 'dir' && !st.isDirectory()) throw new BangerError(ErrorCode.Invalid, `${flag} ${path}: not a directory`, { details: { field, path } });
  return path;
}
