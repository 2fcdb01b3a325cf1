import type {
  BootSource,
  Drive,
  FcRequest,
  Logger,
  MachineConfiguration,
  Metrics,
  NetworkInterface,
  PartialDrive,
  RateLimiter,
  SnapshotCreateParams,
  SnapshotLoadParams,
  Vsock,
} from './api-types.js';

/**
 * Pure builders of every request body the Firecracker driver sends (unit-tested against both
 * shipped OpenAPI specs in test/unit/firecracker-schema.test.ts). No I/O here.
 */

/** What one Firecracker boot needs; paths are as Firecracker must see them (chroot-relative under the jailer). */
export interface FcBootConfig {
  vcpu: number;
  memoryMiB: number;
  /** ELF vmlinux (v1.16.1 boots only that on x86_64). */
  kernel: string;
  initrd?: string;
  bootArgs: string;
  /** In guest order: root (vda) first. */
  disks: { id: 'root' | 'seed' | 'work' | 'modules'; path: string; readOnly?: boolean }[];
  net?: { tap: string; mac: string };
  vsock?: { cid: number; udsPath: string };
  logPath?: string;
  metricsPath?: string;
  /** Dirty-page tracking (for diff snapshots). */
  trackDirtyPages?: boolean;
  /** Per-drive throttling (`--disk-iops` / `--disk-bps`): a `rate_limiter` on every drive. */
  diskLimits?: { iops?: number; bps?: number };
}

/** A drive's `rate_limiter` for per-second limits: buckets of N tokens refilled every 1000 ms (no burst). */
export function rateLimiter(l: { iops?: number; bps?: number } | undefined): RateLimiter | undefined {
  if (!l?.iops && !l?.bps) return undefined;
  return {
    ...(l.bps ? { bandwidth: { size: l.bps, refill_time: 1000 } } : {}),
    ...(l.iops ? { ops: { size: l.iops, refill_time: 1000 } } : {}),
  };
}

/** The boot sequence as named steps, in Firecracker's order (all pre-boot, InstanceStart last). */
export function bootRequests(c: FcBootConfig): FcRequest[] {
  const out: FcRequest[] = [];
  if (c.logPath) {
    const logger: Logger = { log_path: c.logPath, level: 'Info', show_level: true, show_log_origin: false };
    out.push({ step: 'logger', method: 'PUT', path: '/logger', definition: 'Logger', body: logger });
  }
  if (c.metricsPath) {
    const metrics: Metrics = { metrics_path: c.metricsPath };
    out.push({ step: 'metrics', method: 'PUT', path: '/metrics', definition: 'Metrics', body: metrics });
  }
  const machine: MachineConfiguration = { vcpu_count: c.vcpu, mem_size_mib: c.memoryMiB, smt: false, track_dirty_pages: !!c.trackDirtyPages };
  out.push({ step: 'machine-config', method: 'PUT', path: '/machine-config', definition: 'MachineConfiguration', body: machine });
  const boot: BootSource = { kernel_image_path: c.kernel, boot_args: c.bootArgs };
  if (c.initrd) boot.initrd_path = c.initrd;
  out.push({ step: 'boot-source', method: 'PUT', path: '/boot-source', definition: 'BootSource', body: boot });
  for (const d of c.disks) {
    const drive: Drive = { drive_id: d.id, path_on_host: d.path, is_root_device: d.id === 'root', is_read_only: !!d.readOnly };
    const limiter = rateLimiter(c.diskLimits);
    if (limiter) drive.rate_limiter = limiter;
    out.push({ step: `drive-${d.id}`, method: 'PUT', path: `/drives/${encodeURIComponent(d.id)}`, definition: 'Drive', body: drive });
  }
  if (c.net) {
    const nic: NetworkInterface = { iface_id: 'eth0', host_dev_name: c.net.tap, guest_mac: c.net.mac };
    out.push({ step: 'network-interface', method: 'PUT', path: '/network-interfaces/eth0', definition: 'NetworkInterface', body: nic });
  }
  if (c.vsock) {
    const vsock: Vsock = { guest_cid: c.vsock.cid, uds_path: c.vsock.udsPath };
    out.push({ step: 'vsock', method: 'PUT', path: '/vsock', definition: 'Vsock', body: vsock });
  }
  out.push({ step: 'instance-start', method: 'PUT', path: '/actions', definition: 'InstanceActionInfo', body: { action_type: 'InstanceStart' } });
  return out;
}

export function vmStateRequest(state: 'Paused' | 'Resumed'): FcRequest {
  return { step: state === 'Paused' ? 'pause' : 'resume', method: 'PATCH', path: '/vm', definition: 'Vm', body: { state } };
}

export function snapshotCreateRequest(p: SnapshotCreateParams): FcRequest {
  const body: SnapshotCreateParams = { snapshot_path: p.snapshot_path, mem_file_path: p.mem_file_path, snapshot_type: p.snapshot_type ?? 'Full' };
  return { step: 'snapshot-create', method: 'PUT', path: '/snapshot/create', definition: 'SnapshotCreateParams', body };
}

/**
 * `PUT /snapshot/load`. The optional fields are newer than the oldest Firecracker banger accepts
 * (MIN_FIRECRACKER 1.5; test/unit/firecracker-schema.test.ts checks this against each spec):
 * `network_overrides` arrived in v1.12, `track_dirty_pages` in v1.13, `vsock_override` in v1.16;
 * a v1.5 Firecracker refuses a body carrying them. snapshot.ts sends them only when the restore
 * needs them and the binary's version has them (NETWORK_OVERRIDES_MIN, VSOCK_OVERRIDE_MIN).
 */
export function snapshotLoadRequest(p: SnapshotLoadParams): FcRequest {
  const body: SnapshotLoadParams = {
    snapshot_path: p.snapshot_path,
    mem_backend: { backend_type: p.mem_backend.backend_type, backend_path: p.mem_backend.backend_path },
  };
  if (p.track_dirty_pages !== undefined) body.track_dirty_pages = p.track_dirty_pages;
  if (p.resume_vm !== undefined) body.resume_vm = p.resume_vm;
  if (p.network_overrides?.length) body.network_overrides = p.network_overrides.map((n) => ({ iface_id: n.iface_id, host_dev_name: n.host_dev_name }));
  if (p.vsock_override) body.vsock_override = { uds_path: p.vsock_override.uds_path };
  return { step: 'snapshot-load', method: 'PUT', path: '/snapshot/load', definition: 'SnapshotLoadParams', body };
}

/** `PATCH /drives/{id}`: after a snapshot load, point a drive at this VM's own file before it runs. */
export function driveUpdateRequest(id: string, path: string): FcRequest {
  const body: PartialDrive = { drive_id: id, path_on_host: path };
  return { step: `drive-${id}-update`, method: 'PATCH', path: `/drives/${encodeURIComponent(id)}`, definition: 'PartialDrive', body };
}
