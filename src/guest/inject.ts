import type { Exec } from '../core/exec.js';
import type { Logger } from '../core/log.js';

/**
 * The single step that adds banger's guest files to an unpacked root filesystem before
 * mkfs.ext4 -d: the first-boot script (/usr/local/libexec/banger-first-boot), the guest
 * agent, its systemd unit, and the unit masks a microVM needs. Placeholder until the guest
 * work lands.
 */
export interface InjectOptions {
  exec: Exec;
  log: Logger;
}

export const FIRST_BOOT_PATH = '/usr/local/libexec/banger-first-boot';

export async function injectGuestFiles(_rootDir: string, _opts: InjectOptions): Promise<{ injected: string[] }> {
  return { injected: [] };
}
