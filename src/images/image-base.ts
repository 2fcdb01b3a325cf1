import { BangerError, ErrorCode } from '../core/errors.js';
import type { Context } from '../core/context.js';
import type { ProgressEvent } from '../core/operation.js';
import { SecretBox } from '../core/secrets.js';
import { noVms, type VmUsage } from '../core/usage.js';
import type { KernelLookup } from '../kernels/lookup.js';
import { PreparedImages } from './prepared.js';
import { ImageRepo } from './record.js';
import { CredentialStore } from './registry/auth.js';
import { cleanStaleRamStaging, RAM_DIR, ramPrefix } from './staging.js';
import { BlobStore } from './store.js';

export interface OpContext {
  signal?: AbortSignal;
  progress?: (ev: ProgressEvent) => void;
}

export interface ImageServiceDeps {
  kernels: KernelLookup;
  vmUsage?: VmUsage;
}

/**
 * What every image verb shares: the repository, the content store, registry credentials, the
 * names being built and the work left running after a reply. The verbs (pull.ts, import.ts,
 * pipeline.ts, remove.ts, login.ts) are functions of this; `ImageService` (service.ts) is the
 * facade that names them.
 */
export class ImageBase {
  readonly repo: ImageRepo;
  readonly store: BlobStore;
  readonly creds: CredentialStore;
  /** Prepared root disks of images (`image prepare`; prepared.ts). */
  readonly prepared: PreparedImages;
  /** Names with a build in flight (a second build of one name is E_EXISTS). */
  readonly building = new Set<string>();
  private readonly pending = new Set<Promise<void>>();
  /** The tmpfs used for RAM staging (tests point it at a small tmpfs of their own). */
  ramDir = RAM_DIR;

  readonly vmUsage: VmUsage;

  /**
   * `deps.kernels` checks `--kernel-ref`; `deps.vmUsage` answers which VMs use an image (the
   * daemon passes the vms table's; default `noVms`, for use without VMs).
   */
  constructor(
    readonly ctx: Context,
    readonly deps: ImageServiceDeps,
  ) {
    this.vmUsage = deps.vmUsage ?? noVms;
    this.repo = new ImageRepo(ctx.db);
    this.store = new BlobStore(ctx.layout, ctx.db);
    this.prepared = new PreparedImages(ctx.db, ctx.layout);
    this.creds = new CredentialStore(ctx.db, ctx.exec, process.env, new SecretBox(ctx.layout.secretKey));
    this.background(
      cleanStaleRamStaging(ctx.layout.root).then((r) => r.length && ctx.log.info('removed stale RAM staging dirs', { dirs: r })),
      'clean stale RAM staging',
    );
  }

  /** Prefix of this root's RAM staging dirs under /dev/shm (tests check nothing is left). */
  ramStagingPrefix(): string {
    return ramPrefix(this.ctx.layout.root);
  }

  /**
   * Work finished after a reply was sent (removing a finished build's staging tree, which
   * can take seconds); `settled()` resolves when all of it is done. Stale staging dirs left
   * by a crash are wiped by the daemon's tmp cleanup at start.
   */
  background(p: Promise<unknown>, what: string): void {
    const t = p.then(
      () => undefined,
      (e) => this.ctx.log.warn('background step failed', { step: what, error: (e as Error).message }),
    );
    this.pending.add(t);
    void t.finally(() => this.pending.delete(t));
  }

  async settled(): Promise<void> {
    while (this.pending.size) await Promise.all([...this.pending]);
  }

  /** E_EXISTS when `name` is an image already or being built by another request. */
  reserveCheck(name: string): void {
    if (this.repo.find(name))
      throw new BangerError(ErrorCode.Exists, `image '${name}' already exists`, { hint: `remove it with 'banger image rm ${name}' or choose another --name` });
    if (this.building.has(name))
      throw new BangerError(ErrorCode.Exists, `image '${name}' is being built by another request`, { hint: 'wait for it, or choose another --name' });
  }

  /** `--kernel-ref`: the kernel must exist (E_NOT_FOUND naming the flag); null when not given. */
  async checkKernel(kernelRef: string | undefined): Promise<string | null> {
    if (!kernelRef) return null;
    try {
      this.deps.kernels.get(kernelRef);
    } catch (e) {
      if (e instanceof BangerError && e.code === ErrorCode.NotFound) {
        throw new BangerError(ErrorCode.NotFound, `--kernel-ref: kernel '${kernelRef}' not found`, {
          hint: "see 'banger kernel list', or pull it with 'banger kernel pull NAME'",
          cause: e,
        });
      }
      throw e;
    }
    return kernelRef;
  }
}
