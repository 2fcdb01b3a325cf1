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
}

/** `image show`: the record, the content-store digests it references and the VMs made from it. */
export interface ImageDetail extends ImageRecord {
  blobs: string[];
  usedBy: string[];
}
