import type { WarmSnapshot } from './image.js';
import type { VmmKind } from '../vmm.js';

/**
 * VM shapes, defined once: the vms domain stores and returns them and the RPC contract
 * (`rpc/types.ts`) sends them as they are. Plain JSON, no behaviour.
 */

/** A guest TCP port published on the host (`vm create -p`). */
export interface PortSpec {
  hostIp: string;
  hostPort: number;
  guestPort: number;
  proto: 'tcp';
}

/** Per published port: clients at once, and the idle time after which a connection is closed (0: never). */
export interface PortLimits {
  maxConnections: number;
  idleTimeoutSeconds: number;
}

/** A host folder shared with the guest (`vm create --mount`). */
export interface MountSpec {
  hostDir: string;
  guestDir: string;
  readOnly: boolean;
  /** Mount tag (`banger0`, `banger1`, … in --mount order). */
  tag: string;
  /** Device: virtiofs when a virtiofsd is installed (chosen at create), else virtio-9p. */
  kind?: '9p' | 'virtiofs';
}

export type EgressMode = 'deny' | 'nat' | 'allow';

/** What was asked for at create time (spec); the row's state/pid are what was observed. */
export interface VmSpec {
  vcpu: number;
  memoryMiB: number;
  diskSizeBytes?: number;
  workDiskBytes?: number;
  nat: boolean;
  /**
   * Egress policy (docs/network-policy.md): `deny` (nothing beyond what banger serves the VM),
   * `allow` (NAT to the `allow` destinations only), `nat` (`--nat`: everything). Absent: no
   * policy (the bridge, and NAT when `nat`), as before policies existed.
   */
  egress?: EgressMode;
  /** `--allow` destinations, canonical (network/allow-spec.ts), with `egress: 'allow'`. */
  allow?: string[];
  /** `--allow-vm`: VMs (by name) this one may exchange traffic with across the bridge. */
  allowVm?: string[];
  /** Boot with init=/usr/local/libexec/banger-first-boot. */
  firstBoot: boolean;
  /** Archive URL the first boot installs from instead of the guest's own sources (seed file package-mirror). */
  packageMirror?: string;
  /** HTTP proxy for the first boot's install (seed file package-proxy). */
  packageProxy?: string;
  rootDisk: { path: string; format: 'raw' | 'qcow2' };
  /** The image's prepared disk the root disk stands on, instead of the image's base (vms/prepare.ts). */
  baseDisk?: string;
  /** A builder VM (vms/prepare.ts): its first boot prepares the image and powers off. */
  prepare?: boolean;
  /** Published ports (`-p`), forwarded by the daemon (vms/ports.ts). */
  ports?: PortSpec[];
  /** Limits of every published port (vms/ports.ts); absent when there are no ports. */
  portLimits?: PortLimits;
  /** Host folders (`--mount`; vms/host-folders.ts). */
  mounts?: MountSpec[];
  /** A warm builder (vms/warm.ts): guest RAM in this file, saved as the image's warm snapshot. */
  memoryFile?: string;
  /** Restored from this saved state (a warm snapshot, a named snapshot) instead of a cold boot. */
  restoredFrom?: string;
  /** Resource limits (vms/limits.ts, docs/limits.md); absent: none. */
  limits?: VmLimits;
}

/**
 * A VM's resource limits, fixed at create. `memoryMaxMiB` and `pidsMax` are present exactly when
 * the VMM runs in its own cgroup (with `cpuQuota`, a fraction of one host CPU); `diskIops` and
 * `diskBps` throttle each disk in the VMM itself.
 */
export interface VmLimits {
  memoryMaxMiB?: number;
  pidsMax?: number;
  cpuQuota?: number;
  diskIops?: number;
  diskBps?: number;
}

/** What `vm show` reports of a running VM's cgroup: limits read back from it and current usage. */
export interface VmCgroupUsage {
  version: 1 | 2;
  /** The group's directories (one per hierarchy on v1). */
  dirs: string[];
  memoryMaxBytes: number | null;
  memoryCurrentBytes: number;
  /** Highest memory use seen (v1 memory.max_usage_in_bytes, v2 memory.peak where the kernel has it). */
  memoryPeakBytes?: number;
  /** Processes the kernel's OOM killer killed in the group (memory.events / memory.oom_control). */
  oomKills?: number;
  pidsMax: number | null;
  pidsCurrent: number;
  /** CPU time as a fraction of one CPU, or null (no quota). */
  cpuQuota: number | null;
  /** CPU time used, microseconds (v2 cpu.stat usage_usec, v1 cpuacct.usage). */
  cpuUsageUsec?: number;
}

/** `paused`: `vm pause` saved its state to disk (vms/pause.ts) and its VMM exited; `vm resume` restores it. */
export type VmState = 'created' | 'starting' | 'running' | 'stopping' | 'stopped' | 'paused' | 'error';

/** A VM's row: what was asked for (`spec`) and what was last recorded (`state`, `pid`). */
export interface VmRecord {
  name: string;
  id: string;
  image: string;
  kernel: string;
  spec: VmSpec;
  desiredState: 'running' | 'stopped';
  state: VmState;
  /** The VMM that runs it, and why it was chosen. */
  vmm: VmmKind;
  vmmReason: string;
  pid: number | null;
  tap: string | null;
  mac: string | null;
  ip: string | null;
  createdAt: string;
  startedAt: string | null;
  /** False while the create that made this row is still running (or died mid-way). */
  createDone: boolean;
  /** End of the VM's lifetime (ISO, UTC; `--ttl`), or null; `onExpire` is what it does then (vms/ttl.ts). */
  expiresAt: string | null;
  onExpire: OnExpire | null;
}

/** What happens to a VM when its lifetime (`--ttl`) ends: stopped (disk kept) or removed. */
export type OnExpire = 'stop' | 'rm';

/** A VM as returned over RPC: the record plus what was observed on the host. */
export interface VmView extends VmRecord {
  running: boolean;
  dir: string;
  console: string;
  sshCommand?: string;
  /** A paused VM's saved state: its size on disk and when it was saved. */
  paused?: { bytes: number; at: string };
}

/** `vm logs`: console output from an offset. */
export interface VmLogs {
  data: string;
  /**
   * Offset to ask for next. Offsets count from the boot's first byte and survive the console's
   * rotation; an offset older than what is kept resumes at the oldest byte kept, one past `end`
   * (the VM was restarted) starts over.
   */
  offset: number;
  /** One past the newest byte when this was read. */
  end: number;
  running: boolean;
}

/** What the CLI needs to run OpenSSH itself (`vm ssh`). */
export interface SshInfo {
  name: string;
  ip: string;
  user: string;
  identityFile: string;
  groupIdentityFile?: string;
  knownHostsFile: string;
  options: string[];
  /** The VM was paused and was resumed for this (milliseconds it took). */
  resumedMs?: number;
}

/** A named snapshot of a VM (`vm snapshot`; vms/snapshot.ts): what it was taken of, where, its size. */
export type NamedSnapshot = WarmSnapshot & { vm: string; tag: string };
