import { z } from 'zod';

/**
 * Bounds shared by config and the RPC contract (both parse with these schemas).
 *
 * Published ports: `PortMaxConnections` clients at once per port (there is no "unlimited":
 * every client costs the daemon two file descriptors), `PortIdleTimeoutSeconds` before an idle
 * connection is closed on both sides (0: never, up to a week).
 */
export const PortMaxConnections = z.number().int().min(1).max(65536);
export const PortIdleTimeoutSeconds = z
  .number()
  .int()
  .min(0)
  .max(7 * 86400);

/** The serial console log's cap, in bytes (vms/console-log.ts): 64 KiB to 1 GiB. */
export const ConsoleLogMaxBytes = z
  .number()
  .int()
  .min(64 * 1024)
  .max(1024 ** 3);

/**
 * Per-VM resource limits (issue 24; config `limits`, `vm create --cpu-quota/--disk-iops/--disk-bps`).
 * `CpuQuota`: CPU time as a fraction of one host CPU (0.5 = half a CPU, 2 = two CPUs).
 * `DiskIops` / `DiskBps`: each disk's I/O operations / bytes per second (the VMM throttles them).
 */
export const CpuQuota = z.number().min(0.01).max(1024);
export const DiskIops = z.number().int().min(1).max(10_000_000);
export const DiskBps = z
  .number()
  .int()
  .min(4096)
  .max(2 ** 40);
export const PidsMax = z
  .number()
  .int()
  .min(16)
  .max(2 ** 22);
