import type { Exec } from '../../core/exec.js';
import type { Logger } from '../../core/log.js';
import type { ProgressEvent } from '../../rpc/protocol.js';
import { BangerError, ErrorCode } from '../../core/errors.js';

/**
 * A catalog entry of kind "debian": the kernel is resolved from Debian's archive through the
 * signed InRelease → Packages → .deb chain, never a hard-coded ABI number.
 */
export interface DebianKernelEntry {
  name: string;
  kind: 'debian';
  distro: string;
  arch: string;
  /** Meta package whose dependency names the real kernel package, e.g. linux-image-cloud-amd64. */
  package: string;
  suite: string;
  component?: string;
  description: string;
  /** Approximate download size, for `kernel list --available`. */
  sizeBytes?: number;
  kernelVersion?: string;
}

export interface FetchDebianKernelOptions {
  entry: DebianKernelEntry;
  /** Archive mirror, e.g. http://deb.debian.org/debian (config debianMirror, else host apt sources). */
  mirror: string;
  /** Keyring used with gpgv to verify InRelease. */
  keyring: string;
  /** Empty staging directory to fill: vmlinuz, vmlinux, initrd.img, (modules/). */
  outDir: string;
  /** Scratch directory (removed by the caller). */
  tmpDir: string;
  exec: Exec;
  log: Logger;
  signal?: AbortSignal;
  progress?: (ev: ProgressEvent) => void;
}

export interface FetchDebianKernelResult {
  kernelVersion: string;
  /** e.g. "debian:linux-image-6.1.0-37-cloud-amd64@http://deb.debian.org/debian" */
  source: string;
  /** sha256 of the .deb that was verified. */
  debSha256: string;
}

/** Resolve, verify, unpack and build an initramfs. Placeholder until the Debian kernel work lands. */
export async function fetchDebianKernel(opts: FetchDebianKernelOptions): Promise<FetchDebianKernelResult> {
  throw new BangerError(ErrorCode.Internal, `kernel ${opts.entry.name}: Debian archive kernels are not implemented yet`);
}
