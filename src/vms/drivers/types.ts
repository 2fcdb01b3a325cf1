import type { VmFiles } from '../files.js';
import type { MountSpec } from '../publish-spec.js';

/**
 * The VMM driver interface. QEMU implements it now; Firecracker plugs into the same shape.
 * Contract:
 * - `prepare` creates the writable root disk from the image's base rootfs (base never written)
 *   and returns its path; it must not depend on the image size for its time where possible.
 * - `start` launches a VMM that survives the daemon (daemonized / detached) and resolves once
 *   the process is running with its control socket; it throws E_VMM naming the step on failure.
 * - `stop` asks the guest to shut down, waits up to `timeoutMs`, then forces it; `kill` sends a
 *   signal. Both are idempotent (a VMM already gone = success).
 * - `status` checks the host: pid alive AND its command line belongs to this VM.
 */
export type VmmKind = 'qemu' | 'firecracker';

export interface DiskSpec {
  /** Guest device order: root (vda), seed (vdb), then work and modules when present. */
  id: 'root' | 'seed' | 'work' | 'modules';
  path: string;
  format: 'raw' | 'qcow2';
  /** Attached read-only (a kernel's modules disk is shared by every VM of that kernel). */
  readOnly?: boolean;
}

export interface LaunchSpec {
  id: string;
  /** The owning banger instance's id (owner.ts): part of the process's `-name`. */
  instance: string;
  name: string;
  files: VmFiles;
  vcpu: number;
  memoryMiB: number;
  /** bzImage or PVH vmlinux. */
  kernel: string;
  initrd?: string;
  cmdline: string;
  disks: DiskSpec[];
  net: { tap: string; mac: string };
  /**
   * Describe devices through ACPI (microvm acpi=on) instead of `virtio_mmio.device=` on the
   * command line. Needed by modular kernels (Debian's) whose initramfs insmods virtio_mmio.
   */
  acpi: boolean;
  /** Use KVM acceleration (qemu: `-accel kvm` else `-accel tcg`). */
  kvm: boolean;
  /** Host folders shared over virtio-9p (qemu only; mounts.ts). */
  mounts?: MountSpec[];
}

export interface VmmStatus {
  running: boolean;
  pid?: number;
}

export interface AgentChannel {
  kind: 'unix-serial' | 'vsock-uds';
  path: string;
}

export interface VmmDriver {
  readonly kind: VmmKind;
  prepare(files: VmFiles, baseRootfs: string, opts: { sizeBytes?: number; signal?: AbortSignal }): Promise<DiskSpec>;
  start(spec: LaunchSpec, opts?: { signal?: AbortSignal }): Promise<{ pid: number }>;
  stop(files: VmFiles, opts: { timeoutMs: number; guestShutdown?: () => Promise<void> }): Promise<void>;
  kill(files: VmFiles, signal?: NodeJS.Signals): Promise<void>;
  status(files: VmFiles, pidHint?: number | null): Promise<VmmStatus>;
  consolePath(files: VmFiles): string;
  agentChannel(files: VmFiles): AgentChannel;
}
