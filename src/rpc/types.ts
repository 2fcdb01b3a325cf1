/**
 * Result types of the RPC contract (`rpc/contract.ts`): plain JSON shapes, the same on both
 * ends of the socket. The daemon's handlers are compiled against them, so a service whose
 * return type stops matching fails the build rather than a client.
 */

import type { ImagePrepared, WarmSnapshot } from '../core/shapes/image.js';
import type { CatalogView } from '../core/shapes/kernel.js';
import type { VmCgroupUsage, VmView } from '../core/shapes/vm.js';

// The domain shapes, defined once below both ends (core/shapes/): what a service returns is
// what goes on the wire.
/** A pulled or imported kernel. */
export type { KernelRecord as Kernel, KernelDetail, CatalogView as CatalogEntry, KernelPullResult } from '../core/shapes/kernel.js';
/** An image: a base ext4 built from an OCI image or a local rootfs. */
export type { ImageRecord as Image, ImageDetail, ImagePrepared, WarmSnapshot } from '../core/shapes/image.js';
export type { NamedSnapshot } from '../core/shapes/vm.js';
/** A VM: what was asked for (`spec`) and what was observed (`state`, `pid`, `running`). */
export type { VmView as Vm, VmState, VmSpec, VmLogs, SshInfo, VmLimits, VmCgroupUsage } from '../core/shapes/vm.js';

export interface KernelCatalog {
  entries: CatalogView[];
  /** Remote catalogs that could not be read (the others are still listed). */
  warnings: Array<{ catalog: string; code: string; message: string; hint?: string }>;
}

/** What a removal returns: the names removed. */
export interface Removed {
  removed: string[];
}

export interface KernelRemoved extends Removed {
  /** VMs that still name the kernel (only non-empty with `force`). */
  usedBy: string[];
}

export interface PruneResult {
  /** Number of blobs freed. */
  removed: number;
  /** Bytes freed: blobs and prepared disks. */
  freedBytes: number;
  /** Prepared disks removed: superseded by a newer prepare or left by a crash, and no VM stands on them. */
  preparedRemoved?: number;
  /** Warm snapshots removed (`IMAGE/SHAPE`): their image or prepared disk is gone. */
  warmRemoved?: string[];
}

export interface ImagePrepareResult {
  image: string;
  /** The image needs the first-boot install (false: it has systemd and sshd; nothing done). */
  needed: boolean;
  /** This call prepared it (false: the prepared disk of the same inputs is used). */
  prepared: boolean;
  /** This call waited for another request's prepare of the same image. */
  waited: boolean;
  record?: ImagePrepared;
  /** The warm snapshot made right after (config firstBoot.warmAfterPrepare, `--no-warm`). */
  warm?: WarmSnapshot;
  /** Why the warm after the prepare failed (the prepare itself stands). */
  warmError?: string;
}

export interface LoginResult {
  registry: string;
  username: string;
}

export interface LogoutResult {
  registry: string;
  removed: boolean;
}

export interface VmDetail extends VmView {
  /** The VM's files on the daemon's host, by role. */
  files: Record<string, string>;
  /** The first-boot init path on the kernel command line, or null. */
  cmdlineFirstBoot: string | null;
  /** How the driver made the root disk, when it says (Firecracker: 'reflink' | 'sparse'). */
  rootDiskMethod?: string;
  /** A running VM's cgroup: its limits as the kernel has them and current usage (docs/limits.md). */
  cgroup?: VmCgroupUsage;
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
  /** This instance's egress-policy table `bridge banger-<instance>` was deleted. */
  policyTable: boolean;
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
