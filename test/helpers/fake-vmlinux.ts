/**
 * A fake kernel image that banger's kernel identification accepts as an ELF vmlinux
 * (`kernels/identify.ts`): an ELF64 little-endian header of the given type and machine, then a
 * `Linux version …` banner from which the release is read. Tests that need a kernel to import or
 * boot-plan against (never to run) use this one builder.
 */
export interface FakeVmlinux {
  /** The release in the banner (default 6.1.0-test). */
  release?: string;
  /** e_type: 2 = ET_EXEC, a vmlinux (default); 3 = ET_DYN, a program, which banger refuses. */
  type?: number;
  /** e_machine: 62 = x86_64 (default), 183 = aarch64. */
  machine?: number;
  /** Bytes after the banner (to make two images differ). */
  payload?: string;
  /** Leave the banner out (an ELF that is no Linux kernel). */
  noBanner?: boolean;
}

export function fakeElfVmlinux(o: FakeVmlinux = {}): Buffer {
  const h = Buffer.alloc(128);
  h.write('\x7fELF', 0, 'latin1');
  h[4] = 2; // ELFCLASS64
  h[5] = 1; // little-endian
  h.writeUInt16LE(o.type ?? 2, 16);
  h.writeUInt16LE(o.machine ?? 62, 18);
  const banner = o.noBanner ? '' : `Linux version ${o.release ?? '6.1.0-test'} (builder@host) #1 SMP\n`;
  return Buffer.concat([h, Buffer.from(banner + (o.payload ?? ''))]);
}
