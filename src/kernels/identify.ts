import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';

/**
 * Recognise Linux kernel images: an x86 `bzImage` (boot protocol header "HdrS" at 0x202), or an
 * ELF `vmlinux`, which must be an executable ELF (e_type ET_EXEC, as every vmlinux is) holding
 * the kernel's "Linux version X.Y…" banner. Any other ELF (`/bin/ls` is ET_DYN and has no
 * banner) is not a kernel. Also reads the architecture (ELF e_machine) and the kernel version
 * (bzImage header string, or the banner).
 */
export type KernelImageKind = 'elf' | 'bzimage';

export interface KernelImageInfo {
  kind: KernelImageKind;
  arch?: string;
  version?: string;
}

const ET_EXEC = 2;
const ELF_MACHINES: Record<number, string> = { 3: 'i386', 62: 'x86_64', 183: 'aarch64', 243: 'riscv64', 40: 'arm' };

/** Pure: identify from the first 1 KiB (or more) of a file. */
export function identifyHeader(head: Buffer): KernelImageInfo | undefined {
  if (head.length >= 20 && head[0] === 0x7f && head.toString('latin1', 1, 4) === 'ELF') {
    const little = head[5] === 1;
    const machine = little ? head.readUInt16LE(18) : head.readUInt16BE(18);
    const type = little ? head.readUInt16LE(16) : head.readUInt16BE(16);
    if (type !== ET_EXEC) return undefined;
    return { kind: 'elf', arch: ELF_MACHINES[machine] };
  }
  if (head.length >= 0x210 && head.toString('latin1', 0x202, 0x206) === 'HdrS') {
    let version: string | undefined;
    const off = head.readUInt16LE(0x20e);
    if (off && off + 0x200 < head.length) {
      const end = head.indexOf(0, off + 0x200);
      const s = head.toString('latin1', off + 0x200, end > 0 ? end : Math.min(head.length, off + 0x200 + 128));
      version = /^(\S+)/.exec(s)?.[1];
    }
    return { kind: 'bzimage', arch: 'x86_64', version };
  }
  return undefined;
}

/** Identify a file on disk; undefined when it is neither a bzImage nor an ELF vmlinux with a Linux banner. */
export async function identifyKernelImage(path: string): Promise<KernelImageInfo | undefined> {
  const fh = await open(path, 'r');
  let head: Buffer;
  try {
    const buf = Buffer.alloc(64 * 1024);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    head = buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
  const info = identifyHeader(head);
  if (info?.kind === 'elf') {
    info.version = await findLinuxBanner(path);
    if (!info.version) return undefined;
  }
  return info;
}

/** Find "Linux version X " in a file (streaming; stops at the first hit). */
export async function findLinuxBanner(path: string): Promise<string | undefined> {
  const needle = Buffer.from('Linux version ');
  let carry = Buffer.alloc(0);
  for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 })) {
    const buf = Buffer.concat([carry, chunk as Buffer]);
    let i = buf.indexOf(needle);
    while (i >= 0) {
      const tail = buf.toString('latin1', i + needle.length, Math.min(buf.length, i + needle.length + 80));
      const m = /^(\d+\.\d+[^\s\0]*)\s/.exec(tail);
      if (m) return m[1];
      i = buf.indexOf(needle, i + 1);
    }
    carry = buf.subarray(Math.max(0, buf.length - 100));
  }
  return undefined;
}
