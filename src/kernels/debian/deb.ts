import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { BangerError, ErrorCode } from '../../core/errors.js';
import type { Exec } from '../../core/exec.js';
import { toolEnv } from '../../core/exec.js';

/**
 * Unpack a (verified) .deb's data archive into `dir` without installing it: `dpkg-deb -x`
 * (argv, no maintainer scripts run). Handles data.tar.xz/.zst/.gz, whatever dpkg-deb supports.
 */
export async function unpackDeb(deb: string, dir: string, exec: Exec, signal?: AbortSignal): Promise<void> {
  await mkdir(dir, { recursive: true });
  await exec(['dpkg-deb', '-x', deb, dir], { env: toolEnv(), signal });
}

/** The single boot/vmlinuz-<release> in an unpacked kernel package, and its release string. */
export async function findKernelImage(root: string, pkg: string): Promise<{ vmlinuz: string; release: string; config?: string }> {
  let names: string[] = [];
  try {
    names = await readdir(join(root, 'boot'));
  } catch {
    /* handled below */
  }
  const images = names.filter((n) => n.startsWith('vmlinuz-'));
  if (images.length !== 1) {
    throw new BangerError(ErrorCode.Bundle, `package ${pkg} contains ${images.length} boot/vmlinuz-* files (expected exactly one)`, {
      hint: 'the catalog entry must name a linux-image package',
      details: { package: pkg, found: images },
    });
  }
  const release = images[0]!.slice('vmlinuz-'.length);
  return {
    vmlinuz: join(root, 'boot', images[0]!),
    release,
    config: names.includes(`config-${release}`) ? join(root, 'boot', `config-${release}`) : undefined,
  };
}

/** The lib/modules/<release> directory of an unpacked kernel package (usr-merged or not). */
export async function findModulesDir(root: string, release: string, pkg: string): Promise<string> {
  for (const base of ['lib/modules', 'usr/lib/modules']) {
    const d = join(root, base, release);
    try {
      await readdir(d);
      return d;
    } catch {
      /* next */
    }
  }
  throw new BangerError(ErrorCode.Bundle, `package ${pkg} has no lib/modules/${release}`, { details: { package: pkg } });
}
