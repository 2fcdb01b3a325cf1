import { chmod, chown, lstat, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Layout } from '../core/paths.js';

/**
 * File modes of the state root (docs/security.md, "Files and secrets"). Applied at every
 * daemon start, so an installation made by an older banger (0755 root, 0644 database) is
 * migrated in place:
 *
 *   <root>              0710 root:banger (0700 root:root without the group): group members
 *                       may pass through to the socket and ssh/, and list nothing
 *   logs tmp blobs kernels images vms   0700: images, kernels, VM disks, logs, scratch
 *   ssh/                0750 root:banger (0700 without the group): the group's key copy,
 *                       known_hosts and the ssh_config fragment for `ssh NAME.vm`
 *   banger.db(-wal,-shm), secret.key, bangerd.lock, logs/*.log   0600
 *
 * Only modes and the root's group change; nothing is created but the directories above.
 */
export const PRIVATE_DIRS = ['logDir', 'tmp', 'kernels', 'images', 'vms'] as const;

export async function securePermissions(lay: Layout, gid: number | undefined): Promise<void> {
  await mkdir(lay.root, { recursive: true, mode: 0o700 });
  if (gid !== undefined) await chown(lay.root, 0, gid).catch(() => undefined);
  await chmod(lay.root, gid !== undefined ? 0o710 : 0o700);
  const blobsParent = join(lay.blobs, '..');
  for (const d of [...PRIVATE_DIRS.map((k) => lay[k]), blobsParent, lay.blobs]) {
    await mkdir(d, { recursive: true, mode: 0o700 });
    await chmod(d, 0o700);
  }
  if (await isDir(lay.ssh)) await chmod(lay.ssh, gid !== undefined ? 0o750 : 0o700);
  for (const f of [lay.db, `${lay.db}-wal`, `${lay.db}-shm`, lay.secretKey, lay.logFile, join(lay.logDir, 'bangerd.stderr.log')]) {
    await chmod(f, 0o600).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'ENOENT') throw e;
    });
  }
}

async function isDir(p: string): Promise<boolean> {
  return (await lstat(p).catch(() => undefined))?.isDirectory() ?? false;
}
