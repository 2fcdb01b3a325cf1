/**
 * Result types of the RPC contract (`rpc/contract.ts`): plain JSON shapes, the same on both
 * ends of the socket. The daemon's handlers are compiled against them, so a service whose
 * return type stops matching fails the build rather than a client.
 */

/** A pulled or imported kernel. */
export interface Kernel {
  name: string;
  distro: string;
  arch: string;
  kernelVersion: string;
  /** "pull:<url>", "debian:<package>@<mirror>" or "import:<path>". */
  source: string;
  vmlinuxSha256: string;
  /** The kernel's directory on the daemon's host. */
  dir: string;
  vmlinux?: string;
  vmlinuz?: string;
  initrd?: string;
  modulesDir?: string;
  /** Read-only ext4 holding the modules (Debian kernels). */
  modulesImage?: string;
  sizeBytes: number;
  createdAt: string;
}

export interface KernelDetail extends Kernel {
  manifest?: {
    name: string;
    distro: string;
    arch: string;
    kernelVersion: string;
    vmlinuxSha256: string;
    source: string;
    importedAt: string;
    files: { vmlinux: boolean; vmlinuz: boolean; initrd: boolean; modules: boolean };
  };
}

/** One entry of `kernel.catalog`. */
export interface CatalogEntry {
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

export interface KernelCatalog {
  entries: CatalogEntry[];
  /** Remote catalogs that could not be read (the others are still listed). */
  warnings: Array<{ catalog: string; code: string; message: string; hint?: string }>;
}

export interface KernelPullResult {
  kernel: Kernel;
  /** Fetched now, taken from the content store, or built from Debian's archive. */
  download: 'downloaded' | 'cached' | 'debian';
  /** An earlier kernel of this name was replaced (`force`). */
  replaced: boolean;
  /** This call waited for a concurrent pull of the same kernel and reuses its result. */
  joined: boolean;
}

/** What a removal returns: the names removed. */
export interface Removed {
  removed: string[];
}

export interface KernelRemoved extends Removed {
  /** VMs that still name the kernel (only non-empty with `force`). */
  usedBy: string[];
}

/** An image: a base ext4 built from an OCI image or a local rootfs. */
export interface Image {
  name: string;
  sourceRef: string;
  digest: string;
  platform: string;
  config: { env: string[]; entrypoint: string[]; cmd: string[]; user: string; workdir: string };
  sizeBytes: number;
  kernelRef: string | null;
  /** The base ext4 on the daemon's host (never written after the build). */
  rootfsPath: string;
  fromRegistry: boolean;
  createdAt: string;
}

export interface ImageDetail extends Image {
  /** Content-store digests the image references. */
  blobs: string[];
  /** VMs created from the image. */
  usedBy: string[];
}

export interface PruneResult {
  /** Number of blobs freed. */
  removed: number;
  freedBytes: number;
}

export interface LoginResult {
  registry: string;
  username: string;
}

export interface LogoutResult {
  registry: string;
  removed: boolean;
}

export type VmState = 'created' | 'starting' | 'running' | 'stopping' | 'stopped' | 'error';

/** A VM: what was asked for (`spec`) and what was observed (`state`, `pid`, `running`). */
export interface Vm {
  name: string;
  id: string;
  image: string;
  kernel: string;
  spec: {
    vcpu: number;
    memoryMiB: number;
    diskSizeBytes?: number;
    workDiskBytes?: number;
    nat: boolean;
    firstBoot: boolean;
    packageMirror?: string;
    packageProxy?: string;
    rootDisk: { path: string; format: 'raw' | 'qcow2' };
    /** Published ports (`-p`). */
    ports?: { hostIp: string; hostPort: number; guestPort: number; proto: 'tcp' }[];
    /** Host folders (`--mount`). */
    mounts?: { hostDir: string; guestDir: string; readOnly: boolean; tag: string; kind?: '9p' | 'virtiofs' }[];
  };
  desiredState: 'running' | 'stopped';
  state: VmState;
  /** The VMM that runs it, and why it was chosen. */
  vmm: 'qemu' | 'firecracker';
  vmmReason: string;
  pid: number | null;
  tap: string | null;
  mac: string | null;
  ip: string | null;
  createdAt: string;
  startedAt: string | null;
  createDone: boolean;
  /** When the VM's lifetime ends (ISO), or null without a ttl; what happens then. */
  expiresAt: string | null;
  onExpire: 'stop' | 'rm' | null;
  running: boolean;
  dir: string;
  console: string;
  sshCommand?: string;
}

export interface VmDetail extends Vm {
  /** The VM's files on the daemon's host, by role. */
  files: Record<string, string>;
  /** The first-boot init path on the kernel command line, or null. */
  cmdlineFirstBoot: string | null;
  /** How the driver made the root disk, when it says (Firecracker: 'reflink' | 'sparse'). */
  rootDiskMethod?: string;
}

export interface VmLogs {
  data: string;
  /** Offset to ask for next. */
  offset: number;
  running: boolean;
}

export interface SshInfo {
  name: string;
  ip: string;
  user: string;
  identityFile: string;
  groupIdentityFile?: string;
  knownHostsFile: string;
  options: string[];
}

/** A listening socket inside the guest, as the guest agent reports it. */
export interface ListeningPort {
  proto: string;
  address: string;
  port: number;
}

export interface VmPorts {
  name: string;
  ports: ListeningPort[];
  agent: boolean;
}

export interface SshConfigFile {
  path: string;
  content: string;
}

/** What `daemon.teardown` did. */
export interface TeardownResult {
  /** VMs that were running and are now stopped (a stop that failed was followed by a kill). */
  stopped: string[];
  /** VMs that could be neither stopped nor killed. */
  failed: string[];
  /** Taps removed after the stops (left by VMs that died, or unknown to the database). */
  taps: string[];
  /** VM ids whose NAT rules were removed after the stops. */
  natVms: string[];
  /** The shared nft table `ip banger` was deleted (no instance had a rule left in it). */
  natTable: boolean;
  /** This instance's bridge was deleted. */
  bridge: boolean;
}

export interface DaemonStatus {
  version: string;
  pid: number;
  root: string;
  socket: string;
  configFile: string;
  logFile: string;
  startedAt: string;
  uptimeSeconds: number;
  schemaVersion: number;
  /** This instance's id: the mark on its taps, bridge, NAT rules and QEMU processes. */
  instanceId: string;
  node: { path: string; version: string };
}
