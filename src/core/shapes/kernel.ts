/**
 * Kernel shapes, defined once: the kernels domain returns them and the RPC contract
 * (`rpc/types.ts`) sends them as they are. Plain JSON, no behaviour.
 */

/**
 * A pulled or imported kernel. Paths are absolute, on the daemon's host.
 * At least one of `vmlinux` (ELF, what Firecracker and QEMU microvm boot directly) and
 * `vmlinuz` (bzImage) exists; `vmlinuxSha256` is the sha256 of `vmlinux`, or of `vmlinuz`
 * when the kernel has no ELF image (an imported bzImage).
 */
export interface KernelRecord {
  name: string;
  distro: string;
  arch: string;
  kernelVersion: string;
  /** "pull:<url>", "debian:<package>@<mirror>" or "import:<path>". */
  source: string;
  vmlinuxSha256: string;
  /** The kernel directory: <root>/kernels/<name>. */
  dir: string;
  vmlinux?: string;
  vmlinuz?: string;
  initrd?: string;
  modulesDir?: string;
  /** Every module as a read-only ext4 the guest mounts on /lib/modules/RELEASE (Debian kernels). */
  modulesImage?: string;
  /** Bytes on disk (all files in `dir`). */
  sizeBytes: number;
  createdAt: string;
}

/** `manifest.json` in every kernel directory. */
export interface KernelManifest {
  name: string;
  distro: string;
  arch: string;
  kernelVersion: string;
  vmlinuxSha256: string;
  source: string;
  importedAt: string;
  /** Which of the well-known files exist. */
  files: { vmlinux: boolean; vmlinuz: boolean; initrd: boolean; modules: boolean };
}

/** `kernel show`: the record and its manifest (when the directory still has one). */
export interface KernelDetail extends KernelRecord {
  manifest?: KernelManifest;
}

/** One row of `kernel list --available`. */
export interface CatalogView {
  name: string;
  kind: 'bundle' | 'debian';
  distro: string;
  arch: string;
  kernelVersion?: string;
  sizeBytes?: number;
  state: 'pulled' | 'available';
  description: string;
  /** "embedded" or the catalog URL the entry came from. */
  catalog: string;
  /** Bundles: the tarball URL. Debian: the meta package. */
  source: string;
}

/** What `kernel pull` returns. */
export interface KernelPullResult {
  kernel: KernelRecord;
  /** How the bundle was obtained: fetched now, taken from the content store, or built from Debian's archive. */
  download: 'downloaded' | 'cached' | 'debian';
  /** True when an earlier kernel of this name was replaced (--force). */
  replaced: boolean;
  /** True when this call waited for a concurrent pull of the same kernel and reuses its result. */
  joined: boolean;
}
