import { readFile, rm, writeFile } from 'node:fs/promises';
import { BangerError, ErrorCode } from '../../core/errors.js';
import type { Exec } from '../../core/exec.js';
import { tempSibling } from '../../core/fsutil.js';

/**
 * Extract the uncompressed `vmlinux` ELF from an x86 bzImage (what Firecracker boots).
 * Like the kernel's scripts/extract-vmlinux, but exact: the boot protocol header (≥ 2.08) gives
 * the compressed payload's offset and length, the payload's magic gives the format, and for every
 * format but gzip the last 4 bytes are the uncompressed size (the kernel's `size_append`),
 * which the output must match. The result must start with the ELF magic.
 */

interface Format {
  name: string;
  magic: number[];
  argv: string[];
  sizeAppended: boolean;
}

const FORMATS: Format[] = [
  { name: 'gzip', magic: [0x1f, 0x8b], argv: ['gzip', '-dc'], sizeAppended: false },
  { name: 'xz', magic: [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00], argv: ['xz', '-dc'], sizeAppended: true },
  { name: 'zstd', magic: [0x28, 0xb5, 0x2f, 0xfd], argv: ['zstd', '-dc'], sizeAppended: true },
  { name: 'lz4', magic: [0x02, 0x21, 0x4c, 0x18], argv: ['lz4', '-dc'], sizeAppended: true },
  { name: 'bzip2', magic: [0x42, 0x5a, 0x68], argv: ['bzip2', '-dc'], sizeAppended: true },
  { name: 'lzma', magic: [0x5d, 0x00, 0x00], argv: ['xz', '--format=lzma', '-dc'], sizeAppended: true },
  { name: 'lzo', magic: [0x89, 0x4c, 0x5a, 0x4f], argv: ['lzop', '-dc'], sizeAppended: true },
];

export interface Payload {
  format: Format;
  /** Compressed bytes (without the appended size). */
  data: Buffer;
  /** Uncompressed size promised by the image, when the format appends it. */
  expectedSize?: number;
}

/** Locate and identify the compressed kernel inside a bzImage. Pure; throws E_BUNDLE naming `what`. */
export function locatePayload(image: Buffer, what: string): Payload {
  const bad = (why: string) =>
    new BangerError(ErrorCode.Bundle, `${what} is not a usable bzImage: ${why}`, {
      hint: 'the kernel package may be for another architecture',
      details: { file: what },
    });
  if (image.length < 0x260 || image.toString('latin1', 0x202, 0x206) !== 'HdrS') throw bad('no "HdrS" boot header');
  const version = image.readUInt16LE(0x206);
  if (version < 0x208) throw bad(`boot protocol ${version.toString(16)} < 2.08 has no payload offset`);
  const setupSects = image[0x1f1] || 4;
  const start = (setupSects + 1) * 512 + image.readUInt32LE(0x248);
  const length = image.readUInt32LE(0x24c);
  if (length < 8 || start + length > image.length) throw bad(`payload (offset ${start}, length ${length}) lies outside the file`);
  const payload = image.subarray(start, start + length);
  const format = FORMATS.find((f) => f.magic.every((b, i) => payload[i] === b));
  if (!format) throw bad(`unknown compression (magic ${payload.subarray(0, 6).toString('hex')})`);
  if (!format.sizeAppended) return { format, data: payload };
  return { format, data: payload.subarray(0, length - 4), expectedSize: payload.readUInt32LE(length - 4) };
}

/** Write `vmlinux` (ELF) extracted from the bzImage at `vmlinuzPath` to `outPath` (atomically). Returns the format name. */
export async function extractVmlinux(vmlinuzPath: string, outPath: string, exec: Exec, signal?: AbortSignal): Promise<string> {
  const p = locatePayload(await readFile(vmlinuzPath), vmlinuzPath);
  const r = await exec(p.format.argv, { input: p.data, binary: true, signal });
  const elf = r.stdoutBuffer;
  if (elf.length < 4 || elf.readUInt32BE(0) !== 0x7f454c46) {
    throw new BangerError(ErrorCode.Bundle, `${vmlinuzPath}: the ${p.format.name} payload did not decompress to an ELF image`, {
      details: { file: vmlinuzPath },
    });
  }
  if (p.expectedSize !== undefined && elf.length !== p.expectedSize) {
    throw new BangerError(ErrorCode.Bundle, `${vmlinuzPath}: decompressed ${elf.length} bytes, the image says ${p.expectedSize}`, {
      details: { file: vmlinuzPath },
    });
  }
  const tmp = tempSibling(outPath);
  try {
    await writeFile(tmp, elf, { mode: 0o644 });
    const { rename } = await import('node:fs/promises');
    await rename(tmp, outPath);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
  return p.format.name;
}
