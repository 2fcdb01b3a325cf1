/**
 * The file names inside a kernel's directory (`layout.kernelDir(name)`) and a kernel bundle's
 * top level, defined once: the puller, the importer, the record and the VM domain use these.
 */
export const KERNEL_FILES = {
  /** Uncompressed ELF kernel (PVH note for QEMU; what Firecracker boots). */
  vmlinux: 'vmlinux',
  /** Compressed bzImage (QEMU's fastest path). */
  vmlinuz: 'vmlinuz',
  /** Optional initramfs. */
  initrd: 'initrd.img',
  /** Read-only ext4 with the kernel's modules, attached to guests as a disk. */
  modules: 'modules.ext4',
} as const;
