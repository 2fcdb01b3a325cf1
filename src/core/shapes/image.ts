/**
 * Image shapes, defined once: the images domain returns them and the RPC contract
 * (`rpc/types.ts`) sends them as they are. Plain JSON, no behaviour.
 */

/** The parts of an OCI image config banger keeps. */
export interface ImageConfig {
  env: string[];
  entrypoint: string[];
  cmd: string[];
  user: string;
  workdir: string;
}

/** An image: a base ext4 built from an OCI image or a local rootfs (VMs boot `rootfsPath` with `kernelRef`). */
export interface ImageRecord {
  name: string;
  sourceRef: string;
  digest: string;
  platform: string;
  config: ImageConfig;
  sizeBytes: number;
  kernelRef: string | null;
  /** Absolute path of the base ext4 on the daemon's host (never written after the build). */
  rootfsPath: string;
  fromRegistry: boolean;
  createdAt: string;
  /** The image's prepared disk (`image prepare`), or null when it has none (list, show, pull --prepare). */
  prepared?: ImagePrepared | null;
}

/** An image's prepared root disk: the first-boot install done once, per-VM identity scrubbed. */
export interface ImagePrepared {
  /** sha256 of what decided it: the image's content, the kernel, the first-boot script. */
  key: string;
  diskPath: string;
  /** Bytes it takes on the host (it is sparse). */
  sizeBytes: number;
  kernel: string;
  packageMirror?: string;
  packageProxy?: string;
  /** What the install added (name and version, from the guest's package database). */
  packages: { name: string; version: string }[];
  durationMs: number;
  preparedAt: string;
}

/** `image show`: the record, the content-store digests it references and the VMs made from it. */
export interface ImageDetail extends ImageRecord {
  blobs: string[];
  usedBy: string[];
  prepared: ImagePrepared | null;
  /** Its warm snapshots, one per shape (`image warm`; vms/warm.ts). */
  warm?: WarmSnapshot[];
}

/** What a warm snapshot is for (`warm.json`, vms/warm.ts). */
export interface WarmInfo {
  image: string;
  /** Its directory name under the image's warm directory (vms/warm-find.ts warmKey). */
  shape: string;
  kernel: string;
  vcpu: number;
  memoryMiB: number;
  vmm: string;
  /** The prepared disk the snapshot's root overlay stands on (null: the image's base). */
  baseDisk: string | null;
  createdAt: string;
}

/** A warm snapshot as `image show` lists it: what it is for, where, and its files' sizes (memory: apparent; `allocated`: on disk). */
export interface WarmSnapshot extends WarmInfo {
  dir: string;
  bytes: { state: number; memory: number; disk: number; allocated: number };
}
