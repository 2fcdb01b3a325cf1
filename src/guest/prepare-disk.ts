import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BangerError, ErrorCode } from '../core/errors.js';
import { toolEnv, type Exec } from '../core/exec.js';
import { FIRST_BOOT_PATH } from './constants.js';
import { defaultSources } from './inject.js';

/**
 * Guest-side facts the prepare of an image needs (vms/prepare.ts), read and written on an ext4
 * image with debugfs (no mount):
 * - `rootfsNeedsInstall`: would the first boot install systemd and an SSH server (or OpenRC and
 *   sshd)? The same test the first-boot script makes (`find_systemd && has_ssh_unit`, Alpine's
 *   OpenRC), on the image's files.
 * - `firstBootScript` / `writeFirstBoot`: the builder VM runs this build's first-boot script
 *   (its prepare mode), written into the builder's copy of the image before it boots (a disk
 *   banger made, never one a guest wrote); its sha256 is part of the prepare key, so a new
 *   script prepares again.
 */

/** Where the prepare leaves the list of packages the install added (first-boot script; the host reads the console instead). */
export const PREPARED_PACKAGES_PATH = '/var/lib/banger/prepared-packages';

/** This build's first-boot script and its sha256 (hex). */
export async function firstBootScript(filesDir = defaultSources().filesDir): Promise<{ path: string; data: Buffer; sha256: string }> {
  const path = join(filesDir, 'banger-first-boot.sh');
  const data = await readFile(path).catch((e: unknown) => {
    throw new BangerError(ErrorCode.NotFound, `guest file banger-first-boot.sh not found at ${path}`, {
      hint: 'run `npm run build` in the banger checkout',
      cause: e,
    });
  });
  return { path, data, sha256: createHash('sha256').update(data).digest('hex') };
}

async function debugfsExists(exec: Exec, disk: string, path: string): Promise<boolean> {
  const r = await exec(['debugfs', '-R', `stat ${path}`, disk], { env: toolEnv(), allowFailure: true });
  return r.exitCode === 0 && /Inode:/.test(r.stdout) && !/not found/i.test(r.stderr);
}

/**
 * True when a VM of this root filesystem would have its first boot install systemd and an SSH
 * server: banger's first-boot script and an os-release are there (without them the first boot
 * installs nothing: no script, or "unsupported distribution"), but no systemd binary or no
 * ssh/sshd unit, and it is not an Alpine with OpenRC and sshd.
 */
export async function rootfsNeedsInstall(exec: Exec, rootfs: string): Promise<boolean> {
  const has = (p: string) => debugfsExists(exec, rootfs, p);
  const any = async (ps: string[]) => (await Promise.all(ps.map(has))).some(Boolean);
  if (!(await has(FIRST_BOOT_PATH)) || !(await any(['/etc/os-release', '/usr/lib/os-release']))) return false;
  const unitDirs = ['/etc/systemd/system', '/lib/systemd/system', '/usr/lib/systemd/system'];
  const [systemd, ssh, openrc] = await Promise.all([
    any(['/lib/systemd/systemd', '/usr/lib/systemd/systemd']),
    any(unitDirs.flatMap((d) => [`${d}/ssh.service`, `${d}/sshd.service`])),
    Promise.all(['/sbin/openrc', '/etc/alpine-release', '/etc/init.d/sshd'].map(has)).then((xs) => xs.every(Boolean)),
  ]);
  return !(systemd && ssh) && !openrc;
}

/**
 * Write `script` as the first-boot script (0755 root:root) into the ext4 image `disk` (the
 * builder's own copy; never a base image), then read it back: a disk without
 * /usr/local/libexec, or a write that did not land, is E_INVALID.
 */
export async function writeFirstBoot(exec: Exec, disk: string, script: { path: string; data: Buffer }, tmpDir: string): Promise<void> {
  const dir = FIRST_BOOT_PATH.slice(0, FIRST_BOOT_PATH.lastIndexOf('/'));
  const base = FIRST_BOOT_PATH.slice(dir.length + 1);
  const work = await mkdtemp(join(tmpDir, 'first-boot-'));
  try {
    const cmds = join(work, 'cmds');
    await writeFile(
      cmds,
      [`cd ${dir}`, `rm ${base}`, `write ${script.path} ${base}`, `sif ${base} mode 0100755`, `sif ${base} uid 0`, `sif ${base} gid 0`, ''].join('\n'),
    );
    await exec(['debugfs', '-w', '-f', cmds, disk], { env: toolEnv() });
    const back = await exec(['debugfs', '-R', `cat ${FIRST_BOOT_PATH}`, disk], { env: toolEnv(), binary: true, allowFailure: true });
    if (!back.stdoutBuffer.equals(script.data)) {
      throw new BangerError(ErrorCode.Invalid, `cannot write ${FIRST_BOOT_PATH} into the builder's disk`, {
        hint: 'the image has no /usr/local/libexec? pull or import it again',
        details: { disk },
      });
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
