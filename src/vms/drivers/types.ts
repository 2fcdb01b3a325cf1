import type { Socket } from 'node:net';
import type { CgroupLimits } from '../../core/cgroup-group.js';
import type { Exec } from '../../core/exec.js';
import type { HostProbe } from '../../core/host.js';
import type { VmFiles } from '../files.js';
import type { MountSpec } from '../../core/shapes/vm.js';

/**
 * The VMM driver interface: everything VMM-specific sits behind it (how it is probed for
 * `auto`, which kernel file it boots, how the root disk is made, how the process is launched,
 * stopped, killed, checked and adopted, where its console goes and how the guest agent's byte
 * stream is reached), and what it supports (`features`, as lima's driver features). The VM
 * service never switches on `kind`: it asks `features`, and reaches what only some VMMs have
 * through optional parts (`folders`).
 *
 * A driver lives in its own folder `src/vms/drivers/<kind>/` and is listed once in
 * `registry.ts`. Contracts, for every implementation:
 * - `probe` has no side effects and never throws for "cannot run here": it says why.
 * - `prepareRootDisk` makes the VM's writable root disk from the image's base rootfs (the
 *   base is never written) and returns the `DiskSpec` that is then launched, as is. Caches it
 *   keeps per image go in `cacheDir` (the layout's per-image cache directory), never in the
 *   image's own directory. Partial output is removed on failure.
 * - `launch` starts a VMM that outlives the daemon and resolves once it runs with its control
 *   channel; it throws E_VMM naming the step (`details.step`) on failure, leaving no process.
 * - `stop` asks the guest to shut down, waits up to `timeoutMs`, then forces it; `kill` sends a
 *   signal. Both are idempotent (a VMM already gone = success) and remove runtime sockets.
 * - `status` checks the host: pid alive AND the process is this VM's (pids get reused).
 * - `adopt` is `status` after a daemon restart, plus whatever the driver must re-attach.
 * - `ownerOf` recognises this driver's VMM processes (reconcile kills orphans with it).
 * - `openAgentStream` resolves a connected socket carrying the guest agent's byte stream (any
 *   handshake already done), or rejects with E_TIMEOUT / E_VMM; the caller owns and destroys it.
 * - `features.mounts` is true exactly when `folders` is there.
 */

/** The VMM kinds banger knows by name (defined once in core/vmm.ts). */
export { VMM_KINDS, type VmmKind } from '../../core/vmm.js';
import type { VmmKind } from '../../core/vmm.js';

/** Kernel image formats: a compressed bzImage (`vmlinuz`) or an uncompressed ELF `vmlinux`. */
export type KernelFormat = 'bzImage' | 'elf-vmlinux';

/** A pulled kernel as the VM domain sees it (paths of the files that exist). */
export interface KernelFiles {
  name: string;
  dir: string;
  vmlinux?: string;
  vmlinuz?: string;
  initrd?: string;
  /** Read-only ext4 with the kernel's modules (attached as a disk; the guest mounts it). */
  modulesImage?: string;
}

/** Which file of a kernel record a driver boots. */
export interface BootKernel {
  format: KernelFormat;
  path: string;
}

/** The host as drivers see it when probed: file/PATH probes plus the KVM verdict (probed once). */
export interface DriverHost {
  probe: HostProbe;
  kvm: { usable: boolean; reason: string };
}

/** A driver's answer to "can you run here?". */
export interface ProbeResult {
  usable: boolean;
  /**
   * Short text for `vm show`'s reason: when not usable, why not ("binary not found", "KVM not
   * usable: …"); when usable, how it will run ("accel kvm", "accel tcg (KVM not usable: …)").
   */
  reason: string;
  /** Whether the VMM will run with KVM acceleration. */
  kvm: boolean;
  /** When not usable: the full sentence for an explicit `--vmm KIND` error (default: reason). */
  error?: string;
  /** When not usable: what to do about it. */
  hint?: string;
  /**
   * Usable only when asked for by name (`--vmm KIND`); `auto` passes it over with `reason`
   * (Firecracker with its binary but no usable KVM: it runs and reports its own error).
   */
  explicitOnly?: boolean;
}

/** One disk attached to the guest. */
export interface DiskSpec {
  /** Guest device order: root (vda), seed (vdb), then work and modules when present. */
  id: 'root' | 'seed' | 'work' | 'modules';
  path: string;
  format: 'raw' | 'qcow2';
  /** Attached read-only (a kernel's modules disk is shared by every VM of that kernel). */
  readOnly?: boolean;
}

/** A VM as a driver addresses it: its id, name and per-VM directory. */
export interface VmHandle {
  id: string;
  name: string;
  files: VmFiles;
}

/** What a driver launches (VMM-neutral; built by `vms/launch.ts`). */
export interface LaunchSpec {
  id: string;
  /** The owning banger instance's id (owner.ts): drivers mark their processes with it. */
  instance: string;
  name: string;
  files: VmFiles;
  vcpu: number;
  memoryMiB: number;
  /** The kernel file picked by the driver's `bootKernel` (its format says which). */
  kernel: string;
  kernelFormat: KernelFormat;
  initrd?: string;
  cmdline: string;
  /** In guest order; the root disk is the `DiskSpec` that `prepareRootDisk` returned. */
  disks: DiskSpec[];
  net: { tap: string; mac: string };
  /** KVM acceleration, as the driver's probe decided when the VMM was chosen. */
  kvm: boolean;
  /** Host folders (`--mount`; only for a driver with `features.mounts`), devices picked by its `folders`. */
  mounts?: MountSpec[];
  /**
   * Guest RAM in this file, mapped shared (a warm-image builder: `save` then leaves RAM there
   * and `meta.sharedMemory` is true, so restores map it privately and lazily). Absent: anonymous RAM.
   */
  memoryFile?: string;
  /** The VMM's cgroup (vms/limits.ts): the driver starts the VMM inside it from its first instruction. */
  cgroup?: LaunchCgroup;
  /** Per-disk throttling (`--disk-iops` / `--disk-bps`), done by the VMM. */
  diskLimits?: { iops?: number; bps?: number };
}

/**
 * A VMM's cgroup as a driver sees it: `procs` are the `cgroup.procs` files its processes enter
 * (core/cgroup-group.ts `enterArgv`); empty for a driver with `features.ownCgroup`, which applies
 * `limits` itself (Firecracker's jailer `--cgroup`) in a `version` hierarchy.
 */
export interface LaunchCgroup {
  version: 1 | 2;
  limits: CgroupLimits;
  procs: string[];
}

export interface VmmStatus {
  running: boolean;
  pid?: number;
}

export interface RootDiskRequest {
  vm: VmHandle;
  /** The image's base rootfs (raw ext4); never written. */
  baseRootfs: string;
  /** The layout's per-image cache directory for this image (may not exist yet). */
  cacheDir: string;
  /** Virtual size of the root disk; default: the base's size. Smaller than the base: E_INVALID. */
  sizeBytes?: number;
  signal?: AbortSignal;
}

/**
 * What a VMM supports, declared by its driver (lima's `Info().Features`). Callers ask these,
 * never the VMM's name.
 */
export interface DriverFeatures {
  /** Host folders shared with the guest (`vm create --mount`); the driver has `folders`. */
  mounts: boolean;
  /** Save and restore a running VM's memory and device state; the driver has `snapshots`. */
  snapshots: boolean;
  /** The guest agent over vsock (else over another byte stream, e.g. a virtio-serial port). */
  vsock: boolean;
  /** The VMM makes its own cgroup from `LaunchSpec.cgroup.limits` (Firecracker's jailer); banger makes none. */
  ownCgroup?: boolean;
}

/** The host side of shared folders, for a driver with `features.mounts`. */
export interface SharedFolders {
  /** The device each mount uses on this host, picked at create (recorded in the VM's spec). */
  devices(mounts: MountSpec[]): Promise<MountSpec[]>;
  /** Before the VMM launches: start what the devices need on the host (inside `o.cgroup`'s procs files). Undo: `stop`. */
  start(vm: VmHandle, mounts: MountSpec[], o?: { cgroup?: string[] }): Promise<void>;
  /** Stop it; idempotent (nothing running is success). */
  stop(vm: VmHandle, mounts: MountSpec[]): Promise<void>;
}

/**
 * The files of one saved VM state, in a directory the caller owns and names (a paused VM's
 * `vm.files.dir/state/`, a named snapshot, an image's warm snapshot). Named by `snapshotFiles(dir)`
 * in `vms/files.ts`. A state is only ever restored with the disk frozen beside it.
 */
export interface SnapshotFiles {
  dir: string;
  /** The VMM's device state (QEMU: the migration stream; Firecracker: the vmstate file). */
  state: string;
  /** Guest RAM when it is kept apart from `state` (QEMU memory-backend-file; Firecracker mem file). */
  memory: string;
  /** The root disk as it was at the moment of the save (a copy of the overlay, never shared live). */
  disk: string;
  /** `snapshot.json`: the `SnapshotMeta` below, written last (a state without it is incomplete). */
  meta: string;
}

/** What must match for a state to be restored, and what it holds (stored as `meta`). */
export interface SnapshotMeta {
  vmm: VmmKind;
  /** The VMM's version string (`qemu-system-x86_64 --version` / Firecracker's `GET /`). */
  vmmVersion: string;
  /** A hash of everything in the launch that device state depends on (not per-VM paths, tap, MAC). */
  fingerprint: string;
  vcpu: number;
  memoryMiB: number;
  /** RAM kept in `memory` (a file clones map privately) rather than in `state`. */
  sharedMemory: boolean;
  bytes: { state: number; memory: number; disk: number };
  createdAt: string;
  /** sha256 of `state` (QEMU: checked before a restore, so a damaged stream is refused up front). */
  stateSha256?: string;
}

/**
 * Save/restore of a running VM (present exactly when `features.snapshots`). Contracts:
 * - `save` stops the guest's vCPUs, writes state and RAM, copies the root disk while the guest
 *   is stopped, writes `meta` last; then the VMM either exits (`then: 'exit'`: pause) or runs
 *   on (`then: 'resume'`: snapshot, fork). Partial files are removed on failure, and with
 *   `then: 'resume'` the guest runs again whatever happened.
 * - `restore` launches a VMM for `spec` from a state whose `meta` matches `fingerprint(spec)`
 *   (else E_CONFLICT naming what differs, nothing started); `spec`'s root disk must already be
 *   a private copy of `from.disk`. Resolves once the guest runs; the VMM is left as `launch`
 *   leaves it (same status/stop/kill/agent stream). Fails leaving no process.
 * - `check(vm)` says why this VM cannot be snapshotted (e.g. a virtiofs mount), or undefined.
 */
/** How a save ends (`then`) and what it copies. */
export interface SnapshotSaveOptions {
  then: 'exit' | 'resume';
  signal?: AbortSignal;
  /** No copy of the root disk (a pause: the VM's own disk stays where it is, and only it restores). */
  keepDisk?: boolean;
}

export interface VmSnapshots {
  fingerprint(spec: LaunchSpec): Promise<{ vmmVersion: string; fingerprint: string }>;
  check(spec: LaunchSpec): string | undefined;
  save(vm: VmHandle, spec: LaunchSpec, to: SnapshotFiles, o: SnapshotSaveOptions): Promise<SnapshotMeta>;
  restore(spec: LaunchSpec, from: SnapshotFiles, o?: { signal?: AbortSignal }): Promise<{ pid: number }>;
}

export interface VmmDriver {
  readonly kind: VmmKind;
  /** What this VMM supports (callers ask this, never `kind`). */
  readonly features: DriverFeatures;
  /** Host folders (present exactly when `features.mounts`). */
  readonly folders?: SharedFolders;
  /** Save/restore (present exactly when `features.snapshots`). */
  readonly snapshots?: VmSnapshots;
  /** Can this VMM run here, and how (no side effects; the KVM verdict is given). */
  probe(host: DriverHost): Promise<ProbeResult>;
  /** The kernel file this VMM boots from a kernel record; E_NOT_FOUND naming the kernel when none fits. */
  bootKernel(kernel: KernelFiles): BootKernel;
  /** The root disk this driver makes for a VM (pure: the path and format `prepareRootDisk` returns). */
  rootDisk(vm: VmHandle): Omit<DiskSpec, 'id'>;
  prepareRootDisk(req: RootDiskRequest): Promise<DiskSpec>;
  launch(spec: LaunchSpec, opts?: { signal?: AbortSignal }): Promise<{ pid: number }>;
  /**
   * Graceful stop; the VMM is forced (QMP quit, SIGKILL) when the guest has not gone within
   * `timeoutMs`. `forced` says whether it had to be. A VMM already gone is success, not forced.
   */
  stop(vm: VmHandle, opts: { timeoutMs: number; guestShutdown?: () => Promise<void> }): Promise<{ forced: boolean }>;
  kill(vm: VmHandle, signal?: NodeJS.Signals): Promise<void>;
  status(vm: VmHandle, pidHint?: number | null): Promise<VmmStatus>;
  /** After a daemon restart: is this VM's VMM still running (and re-attached)? */
  adopt(vm: VmHandle, pidHint?: number | null): Promise<VmmStatus>;
  /** The serial console log the VMM writes. */
  consolePath(vm: VmHandle): string;
  /** The banger instance and VM name a process (argv) belongs to, when it is one of this driver's VMMs. */
  ownerOf(argv: string[]): { instance: string; vm: string } | undefined;
  /** Optional: how the root disk was made, in words for `vm show` (e.g. 'reflink', 'sparse'). */
  rootDiskMethod?(vm: VmHandle): Promise<string | undefined>;
  /** A connected byte stream to the guest agent (see the contract above). */
  openAgentStream(vm: VmHandle, opts: { signal?: AbortSignal; timeoutMs: number }): Promise<Socket>;
}

/** What a driver factory gets: the daemon's exec and the configured binaries. */
export interface DriverDeps {
  exec: Exec;
  binaries: { qemu: string; firecracker: string; qemuImg?: string };
  /** Config `firecracker` (its `jailer` settings); absent = no jailer. */
  firecracker?: { jailer?: { enabled: boolean; binary: string; chrootBaseDir: string; uidBase: number; cgroupVersion: 1 | 2; parentCgroup: string } };
}

/**
 * How a driver module registers itself (its folder's index.ts exports one; registry.ts lists
 * it in DRIVERS): its kind and a factory. Import this type from here, not from registry.ts
 * (which imports the drivers), so there is no import cycle.
 */
export interface DriverRegistration {
  kind: VmmKind;
  create(deps: DriverDeps): VmmDriver;
}
