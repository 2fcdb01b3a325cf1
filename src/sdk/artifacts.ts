import type { RpcClient } from '../rpc/client.js';
import type { Params } from '../rpc/contract.js';
import type { Image, ImageDetail, Kernel, KernelCatalog, KernelDetail, KernelPullResult, KernelRemoved, PruneResult, Removed } from '../rpc/types.js';
import { Operation, checkSignal, type OperationOptions } from './operation.js';

/** Long calls (`progress: true` in the contract) as an Operation: awaitable, iterable, cancellable. */
export function operation<T>(
  opts: OperationOptions,
  call: (o: { onProgress: (ev: Parameters<NonNullable<OperationOptions['onProgress']>>[0]) => void; signal?: AbortSignal }) => Promise<T>,
): Operation<T> {
  return new Operation<T>(async (onProgress) => {
    checkSignal(opts.signal);
    return call({ onProgress, signal: opts.signal });
  }, opts.onProgress);
}

/** Options of `kernels.pull`: the contract's `kernel.pull` params, without the name. */
export type KernelPullOptions = Omit<Params<'kernel.pull'>, 'name'> & OperationOptions;
/** Options of `kernels.import`: the contract's `kernel.import` params. */
export type KernelImportOptions = Params<'kernel.import'> & OperationOptions;

/** `b.kernels`: the kernels the daemon has, and pulling and removing them. */
export class Kernels {
  constructor(private readonly rpc: RpcClient) {}

  /** Pulled and imported kernels. */
  list(): Promise<Kernel[]> {
    return this.rpc.request('kernel.list', {});
  }
  /** One kernel with its manifest; E_NOT_FOUND when it is not pulled. */
  get(name: string): Promise<KernelDetail> {
    return this.rpc.request('kernel.show', { name });
  }
  /** Every catalog entry, pulled or available. */
  catalog(): Promise<KernelCatalog> {
    return this.rpc.request('kernel.catalog', {});
  }
  /** Download (or build from Debian's archive), verify and install a catalog kernel. */
  pull(name: string, opts: KernelPullOptions = {}): Operation<KernelPullResult> {
    const { onProgress: _p, signal: _s, ...params } = opts;
    return operation(opts, (o) => this.rpc.request('kernel.pull', { name, ...params }, o));
  }
  /** Install a kernel from files on the daemon's host. */
  import(opts: KernelImportOptions): Operation<Kernel> {
    const { onProgress: _p, signal: _s, ...params } = opts;
    return operation(opts, (o) => this.rpc.request('kernel.import', params, o));
  }
  /** Remove a kernel; E_IN_USE while a VM uses it unless `force`. */
  rm(name: string, opts: { force?: boolean } = {}): Promise<KernelRemoved> {
    return this.rpc.request('kernel.rm', { name, force: opts.force });
  }
}

/** Options of `images.pull`: the contract's `image.pull` params, without the reference. */
export type ImagePullOptions = Omit<Params<'image.pull'>, 'ref'> & OperationOptions;
/** Options of `images.import`: the contract's `image.import` params. */
export type ImageImportOptions = Params<'image.import'> & OperationOptions;

/** `b.images`: root filesystems built from OCI images or local trees. */
export class Images {
  constructor(private readonly rpc: RpcClient) {}

  list(): Promise<Image[]> {
    return this.rpc.request('image.list', {});
  }
  /** One image with its blobs and the VMs that use it; E_NOT_FOUND when absent. */
  get(name: string): Promise<ImageDetail> {
    return this.rpc.request('image.show', { name });
  }
  /** Pull an OCI image (`docker.io/library/debian:bookworm`) and build its ext4. */
  pull(ref: string, opts: ImagePullOptions = {}): Operation<Image> {
    const { onProgress: _p, signal: _s, ...params } = opts;
    return operation(opts, (o) => this.rpc.request('image.pull', { ref, ...params }, o));
  }
  /** Build an image from a rootfs tar or directory on the daemon's host. */
  import(opts: ImageImportOptions): Operation<Image> {
    const { onProgress: _p, signal: _s, ...params } = opts;
    return operation(opts, (o) => this.rpc.request('image.import', params, o));
  }
  /** Remove an image; E_IN_USE while a VM uses it unless `force`. */
  rm(name: string, opts: { force?: boolean } = {}): Promise<Removed> {
    return this.rpc.request('image.rm', { name, force: opts.force });
  }
  /** Free content-store blobs nothing references. */
  prune(): Promise<PruneResult> {
    return this.rpc.request('system.prune', {});
  }
}
