/**
 * Request and response bodies of the Firecracker API that banger sends or reads, written from
 * the OpenAPI definitions of v1.16.1 and main (1.17.0-dev), names and types as in the spec
 * (`test/fixtures/firecracker/firecracker-api-*.yaml`, definitions of the same name). The unit
 * test `firecracker-schema.test.ts` validates every body banger produces against both specs
 * with additionalProperties false, so a renamed or added field fails there.
 */

/** `PUT /logger` (definition Logger). */
export interface Logger {
  log_path?: string;
  level?: 'Error' | 'Warning' | 'Info' | 'Debug' | 'Trace' | 'Off';
  show_level?: boolean;
  show_log_origin?: boolean;
  module?: string;
}

/** `PUT /metrics` (definition Metrics). */
export interface Metrics {
  metrics_path: string;
}

/** `PUT /machine-config` (definition MachineConfiguration). */
export interface MachineConfiguration {
  vcpu_count: number;
  mem_size_mib: number;
  smt?: boolean;
  track_dirty_pages?: boolean;
  huge_pages?: 'None' | '2M';
}

/** `PUT /boot-source` (definition BootSource). */
export interface BootSource {
  kernel_image_path: string;
  boot_args?: string;
  initrd_path?: string;
}

/** `PUT /drives/{drive_id}` (definition Drive; virtio-block form, no vhost-user `socket`). */
export interface Drive {
  drive_id: string;
  is_root_device: boolean;
  path_on_host: string;
  is_read_only: boolean;
  cache_type?: 'Unsafe' | 'Writeback';
  io_engine?: 'Sync' | 'Async';
  rate_limiter?: RateLimiter;
}

/** Definition RateLimiter: independent bytes/s (`bandwidth`) and ops/s (`ops`) token buckets. */
export interface RateLimiter {
  bandwidth?: TokenBucket;
  ops?: TokenBucket;
}

/** Definition TokenBucket: `size` tokens refilled every `refill_time` ms (`one_time_burst`: extra tokens at start). */
export interface TokenBucket {
  size: number;
  refill_time: number;
  one_time_burst?: number;
}

/** `PUT /network-interfaces/{iface_id}` (definition NetworkInterface). */
export interface NetworkInterface {
  iface_id: string;
  host_dev_name: string;
  guest_mac?: string;
  mtu?: number;
}

/** `PUT /vsock` (definition Vsock). `guest_cid` ≥ 3. */
export interface Vsock {
  guest_cid: number;
  uds_path: string;
}

/** `PATCH /drives/{drive_id}` (definition PartialDrive; post-boot: a new backing file). */
export interface PartialDrive {
  drive_id: string;
  path_on_host?: string;
}

/** `PUT /actions` (definition InstanceActionInfo). */
export interface InstanceActionInfo {
  action_type: 'InstanceStart' | 'SendCtrlAltDel' | 'FlushMetrics';
}

/** `PATCH /vm` (definition Vm). */
export interface Vm {
  state: 'Paused' | 'Resumed';
}

/** `PUT /snapshot/create` (definition SnapshotCreateParams). */
export interface SnapshotCreateParams {
  snapshot_path: string;
  mem_file_path: string;
  snapshot_type?: 'Full' | 'Diff';
}

/** `PUT /snapshot/load` (definition SnapshotLoadParams; the `mem_backend` form, not the deprecated `mem_file_path`). */
export interface SnapshotLoadParams {
  snapshot_path: string;
  mem_backend: { backend_type: 'File' | 'Uffd'; backend_path: string };
  track_dirty_pages?: boolean;
  resume_vm?: boolean;
  network_overrides?: { iface_id: string; host_dev_name: string }[];
  vsock_override?: { uds_path: string };
}

/** `GET /` (definition InstanceInfo). */
export interface InstanceInfo {
  app_name: string;
  id: string;
  state: 'Not started' | 'Running' | 'Paused';
  vmm_version: string;
}

/** One API call: the spec definition its body must match is `definition`. */
export interface FcRequest {
  /** The boot step's name (appears in logs and in the error when it fails). */
  step: string;
  method: 'PUT' | 'PATCH' | 'GET';
  path: string;
  /** OpenAPI definition name the body validates against. */
  definition?: string;
  body?: object;
}
