import { open, stat } from 'node:fs/promises';
import { sleep } from './proc.js';

/** Read up to `max` bytes of a file from `offset`; a missing file reads as empty. */
export async function readFrom(path: string, offset: number, max = 1 << 20): Promise<{ data: string; offset: number; size: number }> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch {
    return { data: '', offset: 0, size: 0 };
  }
  try {
    const size = (await fh.stat()).size;
    const from = offset > size ? 0 : offset; // truncated (VM restarted): start over
    const len = Math.min(max, size - from);
    const buf = Buffer.alloc(Math.max(0, len));
    if (len > 0) await fh.read(buf, 0, len, from);
    return { data: buf.toString('utf8'), offset: from + len, size };
  } finally {
    await fh.close();
  }
}

/** The last `lines` lines of the console (for error messages). */
export async function tail(path: string, lines = 15): Promise<string> {
  const size = (await stat(path).catch(() => undefined))?.size ?? 0;
  const r = await readFrom(path, Math.max(0, size - 8192), 8192);
  return r.data.split('\n').slice(-lines).join('\n');
}

/** Kernel handing over to userspace (initramfs or init=), as printed on the serial console. */
export const INIT_MARKER = /Run \S+ as init process|Freeing unused kernel image/;

/** Resolves true once `pattern` shows up in the console, false when `until()` says stop. */
export async function waitForConsole(path: string, pattern: RegExp, until: () => boolean | Promise<boolean>): Promise<boolean> {
  while (!(await until())) {
    const r = await readFrom(path, 0, 4 << 20);
    if (pattern.test(r.data)) return true;
    await sleep(200);
  }
  return false;
}

/**
 * What the guest's first-boot script (src/guest/files/banger-first-boot.sh) says on the
 * console: it logs "banger-first-boot: step <name>" per step and "banger-first-boot: error: …"
 * when a step fails, followed by "banger-first-boot: hint: …" when it has one. `installing` is true between `step install` and `step exec-init` (systemd
 * and an SSH server being installed with the guest's package manager: minutes under TCG).
 */
export function firstBootState(consoleText: string): { installing: boolean; error?: string; hint?: string } {
  const m = /banger-first-boot: error: ([^\r\n]*)/.exec(consoleText);
  const error = m?.[1];
  // The script prints its hint on the line right after the error.
  const hint = m ? /^\r?\n?banger-first-boot: hint: ([^\r\n]*)/.exec(consoleText.slice(m.index + m[0].length).replace(/^\r?\n/, '\n'))?.[1] : undefined;
  const install = consoleText.lastIndexOf('banger-first-boot: step install');
  const exec = consoleText.lastIndexOf('banger-first-boot: step exec-init');
  return { installing: install >= 0 && exec < install, error, ...(hint ? { hint } : {}) };
}
