import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { BangerError, ErrorCode } from '../../core/errors.js';
import { writeFileAtomic } from '../../core/fsutil.js';
import { writeCpio, type CpioEntry } from './cpio.js';
import type { ResolvedModule } from './modules.js';

/** The /init script, shipped as a real file beside this module (copied into dist by copy-assets). */
export const INIT_SCRIPT = fileURLToPath(new URL('./initramfs/init.sh', import.meta.url));

/** busybox applets /init uses, linked in /bin (anything else: `busybox <applet>`). */
export const APPLETS = [
  'sh',
  'mount',
  'umount',
  'mkdir',
  'mknod',
  'insmod',
  'ip',
  'hostname',
  'sleep',
  'switch_root',
  'cat',
  'echo',
  'grep',
  'poweroff',
  'sync',
  'printf',
  'ls',
];

export interface InitramfsInput {
  /** Static busybox binary (from Debian's busybox-static). */
  busybox: Buffer;
  kernelVersion: string;
  /** Modules in load order (dependencies first). */
  modules: ResolvedModule[];
  /** /init contents; defaults to INIT_SCRIPT. */
  init?: Buffer;
}

/** Build the cpio entries of the banger initramfs. Pure apart from reading INIT_SCRIPT. */
export async function initramfsEntries(input: InitramfsInput): Promise<CpioEntry[]> {
  if (input.busybox.length < 4 || input.busybox.readUInt32BE(0) !== 0x7f454c46) {
    throw new BangerError(ErrorCode.Bundle, 'busybox from busybox-static is not an ELF binary', {
      hint: 'the busybox-static package looks broken; try again later',
    });
  }
  const init = input.init ?? (await readFile(INIT_SCRIPT));
  const modBase = `lib/modules/${input.kernelVersion}`;
  const entries: CpioEntry[] = [
    { type: 'dir', path: 'bin' },
    { type: 'dir', path: 'dev' },
    { type: 'char', path: 'dev/console', major: 5, minor: 1, mode: 0o600 },
    { type: 'char', path: 'dev/null', major: 1, minor: 3, mode: 0o666 },
    { type: 'dir', path: 'proc' },
    { type: 'dir', path: 'sys' },
    { type: 'dir', path: 'run' },
    { type: 'dir', path: 'tmp', mode: 0o1777 },
    { type: 'dir', path: 'newroot' },
    { type: 'dir', path: 'lib' },
    { type: 'dir', path: 'lib/modules' },
    { type: 'file', path: 'init', data: init, mode: 0o755 },
    { type: 'file', path: 'bin/busybox', data: input.busybox, mode: 0o755 },
    ...APPLETS.map((a): CpioEntry => ({ type: 'symlink', path: `bin/${a}`, target: 'busybox' })),
  ];
  const dirs = new Set<string>(['lib', 'lib/modules']);
  for (const m of input.modules) {
    const parts = `${modBase}/${m.rel}`.split('/');
    for (let i = 1; i < parts.length; i++) {
      const d = parts.slice(0, i).join('/');
      if (!dirs.has(d)) {
        dirs.add(d);
        entries.push({ type: 'dir', path: d });
      }
    }
    entries.push({ type: 'file', path: `${modBase}/${m.rel}`, data: m.data });
  }
  const load = input.modules.map((m) => `/${modBase}/${m.rel}`).join('\n');
  entries.push({ type: 'file', path: 'lib/modules/banger.load', data: Buffer.from(load ? load + '\n' : '') });
  return entries;
}

/** Write the gzip-compressed newc initramfs to `target` atomically. Returns its size in bytes. */
export async function buildInitramfs(input: InitramfsInput, target: string): Promise<number> {
  const gz = gzipSync(writeCpio(await initramfsEntries(input)), { level: 6 });
  await writeFileAtomic(target, gz);
  return gz.length;
}
