import { readFile, stat } from 'node:fs/promises';
import { FIRST_BOOT_PATH, MASKED_UNITS } from './constants.js';
import { fileURLToPath } from 'node:url';
import { posix } from 'node:path';
import type { Exec } from '../core/exec.js';
import type { Logger } from '../core/log.js';
import { BangerError, ErrorCode } from '../core/errors.js';
import { guestFileExists, resolveGuestDir, writeGuestFile, writeGuestSymlink } from './rootpath.js';

/**
 * The single step that adds banger's guest files to an unpacked root filesystem before
 * mkfs.ext4 -d. Idempotent (running it twice gives the same tree). Writes, as the guest sees
 * them (symlinks in the image are resolved inside `rootDir`, never outside: E_UNSAFE_ENTRY):
 *
 *   /usr/local/libexec/banger-first-boot                 0755  PID 1 (kernel init=)
 *   /usr/local/bin/banger-vsock-agent                    0755  static guest agent
 *   /usr/local/share/banger/openrc/banger-vsock-agent    0755  OpenRC service (Alpine)
 *   /etc/systemd/system/banger-vsock-agent.service       0644  + multi-user.target.wants link
 *   /etc/ssh/sshd_config.d/banger.conf                   0644  root by key only, pinned host key
 *   /etc/systemd/system/<unit> -> /dev/null                    MASKED_UNITS
 *   /etc/systemd/system/multi-user.target.wants/ssh.service    when the image ships ssh.service
 *                                                              (else sshd.service)
 *
 * Sources: the files next to the compiled module (dist/src/guest/files/, copied by
 * copy-assets) and the agent built by scripts/build-agent.sh (dist/guest/banger-vsock-agent).
 * A missing agent binary is E_NOT_FOUND with the hint to run `npm run build`.
 */
export interface InjectOptions {
  exec: Exec;
  log: Logger;
  /** Overrides the directory holding the guest files (tests). */
  filesDir?: string;
  /** Overrides the agent binary (tests). */
  agentPath?: string;
}

export { FIRST_BOOT_PATH, MASKED_UNITS } from './constants.js';
export const AGENT_PATH = '/usr/local/bin/banger-vsock-agent';
export const AGENT_UNIT = 'banger-vsock-agent.service';
export const OPENRC_PATH = '/usr/local/share/banger/openrc/banger-vsock-agent';
export const SSHD_DROPIN = '/etc/ssh/sshd_config.d/banger.conf';
const UNIT_DIR = '/etc/systemd/system';
const WANTS_DIR = `${UNIT_DIR}/multi-user.target.wants`;

/** Where system unit files live in an image (merged-/usr or not). */
const SYSTEM_UNIT_DIRS = ['/lib/systemd/system', '/usr/lib/systemd/system'];

/** Default locations of the guest files and the agent, relative to this compiled module. */
export function defaultSources(): { filesDir: string; agentPath: string } {
  return {
    filesDir: fileURLToPath(new URL('./files/', import.meta.url)),
    agentPath: fileURLToPath(new URL('../../guest/banger-vsock-agent', import.meta.url)),
  };
}

async function readSource(path: string, what: string, hint: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (e) {
    throw new BangerError(ErrorCode.NotFound, `${what} not found at ${path}`, { hint, cause: e, details: { path } });
  }
}

export async function injectGuestFiles(rootDir: string, opts: InjectOptions): Promise<{ injected: string[] }> {
  const defaults = defaultSources();
  const filesDir = opts.filesDir ?? defaults.filesDir;
  const agentPath = opts.agentPath ?? defaults.agentPath;
  const buildHint = 'run `npm run build` in the banger checkout (it compiles the agent with gcc; needs gcc and libc6-dev)';

  const st = await stat(rootDir).catch(() => undefined);
  if (!st?.isDirectory()) throw new BangerError(ErrorCode.NotFound, `root filesystem directory ${rootDir} does not exist`, { details: { path: rootDir } });

  // Read every source first: a missing one fails before anything is written.
  const agent = await readSource(agentPath, 'guest agent binary (banger-vsock-agent)', buildHint);
  const file = (name: string) => readSource(`${filesDir.replace(/\/$/, '')}/${name}`, `guest file ${name}`, buildHint);
  const [firstBoot, unit, sshd, openrc] = await Promise.all([
    file('banger-first-boot.sh'),
    file('banger-vsock-agent.service'),
    file('sshd-banger.conf'),
    file('banger-vsock-agent.openrc'),
  ]);

  // Check every target directory for unsafe symlinks before the first write, so a refused
  // image is left exactly as it was.
  const targets = [FIRST_BOOT_PATH, AGENT_PATH, OPENRC_PATH, `${UNIT_DIR}/x`, `${WANTS_DIR}/x`, SSHD_DROPIN];
  for (const t of targets) await resolveGuestDir(rootDir, posix.dirname(t), false);

  const injected: string[] = [];
  const put = async (guestPath: string, data: Buffer, mode: number) => {
    await writeGuestFile(rootDir, guestPath, data, mode);
    injected.push(guestPath);
  };
  const link = async (guestPath: string, target: string) => {
    await writeGuestSymlink(rootDir, guestPath, target);
    injected.push(guestPath);
  };

  await put(FIRST_BOOT_PATH, firstBoot, 0o755);
  await put(AGENT_PATH, agent, 0o755);
  await put(OPENRC_PATH, openrc, 0o755);
  await put(`${UNIT_DIR}/${AGENT_UNIT}`, unit, 0o644);
  await link(`${WANTS_DIR}/${AGENT_UNIT}`, `${UNIT_DIR}/${AGENT_UNIT}`);
  await put(SSHD_DROPIN, sshd, 0o644);
  for (const u of MASKED_UNITS) await link(`${UNIT_DIR}/${u}`, '/dev/null');

  const sshUnit = await findSshUnit(rootDir);
  if (sshUnit) await link(`${WANTS_DIR}/${sshUnit.name}`, sshUnit.path);

  opts.log.info('guest files injected', { rootDir, count: injected.length, sshUnit: sshUnit?.name ?? 'none (first boot installs it)' });
  return { injected };
}

/** The image's ssh unit, preferring Debian's ssh.service over sshd.service. */
async function findSshUnit(rootDir: string): Promise<{ name: string; path: string } | undefined> {
  for (const name of ['ssh.service', 'sshd.service']) {
    for (const dir of SYSTEM_UNIT_DIRS) {
      const path = `${dir}/${name}`;
      if (await guestFileExists(rootDir, path)) return { name, path };
    }
  }
  return undefined;
}

/** Exposed for tests and callers that need to check a tree without writing. */
export { resolveGuestDir };
