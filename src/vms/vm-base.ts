import { BangerError, ErrorCode, errorMessage } from '../core/errors.js';
import { detectCgroups, type CgroupHost } from '../core/cgroup.js';
import type { Context } from '../core/context.js';
import { realHost, type HostProbe } from '../core/host.js';
import { KeyedLock } from '../core/lock.js';
import type { ProgressEvent } from '../core/operation.js';
import type { ImageLookup } from '../images/lookup.js';
import type { KernelLookup } from '../kernels/lookup.js';
import type { NetworkService } from '../network/service.js';
import type { Leases } from './deps.js';
import { DriverRegistry } from './drivers/registry.js';
import type { VmHandle, VmmDriver, VmmKind } from './drivers/types.js';
import { vmFiles, type VmFiles } from './files.js';
import { FirstBootProbe } from './first-boot.js';
import { PortForwards } from './ports.js';
import { ImagePreparer, type BuilderParams } from './prepare.js';
import { HostKeyPool, sshPaths, type SshPaths } from './ssh.js';
import { VmRepo, type VmRecord } from './store.js';
import type { VmView } from '../core/shapes/vm.js';

export interface OpContext {
  signal?: AbortSignal;
  progress?: (ev: ProgressEvent) => void;
}

export type { VmView } from '../core/shapes/vm.js';

/**
 * What the VM service asks of the other domains: kernels and images only through their lookups
 * (never their tables or services), the network domain for leases, taps and NAT.
 */
export interface VmServiceDeps {
  kernels: KernelLookup;
  images: ImageLookup;
  network: NetworkService;
}

export interface VmServiceOptions {
  host?: HostProbe;
  drivers?: DriverRegistry | Partial<Record<VmmKind, VmmDriver>>;
  bangerGid?: number;
  /** The cgroup hierarchy VMMs are put in (default: detected from the host once, core/cgroup.ts). */
  cgroups?: CgroupHost;
}

/**
 * What every VM verb shares: the repository, the drivers, SSH paths, the per-VM lock, the
 * host key pool and published ports, and the small lookups (`get`, `handle`, `files`). The
 * verbs (create.ts, start.ts, stop.ts, delete.ts, queries.ts, ssh-config.ts) are functions of
 * this; `VmService` (service.ts) is the facade that names them.
 */
export class VmBase {
  readonly repo: VmRepo;
  readonly ssh: SshPaths;
  /** Operations on one VM are serialised. */
  readonly locks = new KeyedLock();
  readonly host: HostProbe;
  /** The VMM drivers of this service (the build's, or a test's). */
  readonly drivers: DriverRegistry;
  /** gid of the `banger` group (client key copy readable by it); looked up when unset. */
  readonly gid?: number;
  /** VMs inside a start sequence: `observe` must not mark them stopped meanwhile. */
  readonly busy = new Set<string>();
  /** Host keys made ahead of time (off the create path). */
  readonly hostKeys: HostKeyPool;
  /** Does an image's rootfs carry banger's first-boot script (debugfs once per image build). */
  readonly firstBoot: FirstBootProbe;
  /** Published ports (`-p`): listeners in the daemon forwarding to guests (ports.ts). */
  readonly forwards: PortForwards;
  /** Images prepared once (prepare.ts): `image prepare` and the first create of an unprepared image. */
  readonly preparer: ImagePreparer;

  constructor(
    readonly ctx: Context,
    readonly deps: VmServiceDeps,
    private readonly opts: VmServiceOptions = {},
  ) {
    this.repo = new VmRepo(ctx.db, deps.network);
    this.ssh = sshPaths(ctx.layout.ssh);
    this.host = opts.host ?? realHost;
    const d = opts.drivers;
    this.drivers =
      d instanceof DriverRegistry
        ? d
        : d
          ? new DriverRegistry(Object.values(d).filter((x): x is VmmDriver => !!x))
          : DriverRegistry.fromBuild({ exec: ctx.exec, binaries: ctx.config.binaries, firecracker: ctx.config.firecracker });
    this.gid = opts.bangerGid;
    this.forwards = new PortForwards(ctx.log, ctx.config.ports);
    this.firstBoot = new FirstBootProbe(ctx.exec);
    this.hostKeys = new HostKeyPool(ctx.exec, ctx.layout.tmp, 2, (e) => ctx.log.warn('host key pool refill failed', { error: errorMessage(e) }));
    this.preparer = new ImagePreparer({
      ctx,
      images: deps.images,
      kernels: deps.kernels,
      createBuilder: (p, op) => this.createBuilder(p, op),
      removeVm: (name) => this.removeBuilder(name),
      driver: (kind) => this.driver(kind),
      handle: (vm) => this.handle(vm),
      files: (name) => this.files(name),
      baseDisksInUse: () => this.repo.list().flatMap((v) => (v.spec.baseDisk ? [v.spec.baseDisk] : [])),
    });
  }

  /** A builder VM of prepare.ts, created and started (service.ts: `vm create`). */
  createBuilder(_p: BuilderParams, _op: OpContext): Promise<VmRecord> {
    return Promise.reject(new BangerError(ErrorCode.Internal, 'this VM service cannot create builder VMs'));
  }

  /** Remove a builder VM, killing its VMM (service.ts: `vm rm --force`). */
  removeBuilder(_name: string): Promise<void> {
    return Promise.reject(new BangerError(ErrorCode.Internal, 'this VM service cannot remove builder VMs'));
  }

  get net(): NetworkService {
    return this.deps.network;
  }

  /** IP leases belong to the network domain; this service only asks it to release one. */
  get leases(): Leases {
    return this.deps.network;
  }

  /** The registered driver of `kind` (E_VMM when this build has none). */
  driver(kind: string): VmmDriver {
    return this.drivers.get(kind);
  }

  files(name: string): VmFiles {
    return vmFiles(this.ctx.layout.vmDir(name));
  }

  /** A VM as its driver addresses it. */
  handle(vm: Pick<VmRecord, 'id' | 'name'>): VmHandle {
    return { id: vm.id, name: vm.name, files: this.files(vm.name) };
  }

  get(name: string): VmRecord {
    const v = this.repo.find(name);
    if (!v) throw new BangerError(ErrorCode.NotFound, `vm '${name}' not found`, { hint: "see 'banger vm list'", details: { vm: name } });
    return v;
  }

  /** Run `fn` for each name in order, under that VM's lock; every name must exist before any runs. */
  async eachLocked<T>(names: string[], fn: (name: string) => Promise<T>): Promise<T[]> {
    names.forEach((n) => this.get(n));
    const out: T[] = [];
    for (const name of names) out.push(await this.locks.run(name, () => fn(name)));
    return out;
  }

  private cgroupHost?: Promise<CgroupHost>;

  /** The cgroup version and mounts this host offers (detected once; `opts.cgroups` in tests). */
  cgroups(): Promise<CgroupHost> {
    this.cgroupHost ??= this.opts.cgroups ? Promise.resolve(this.opts.cgroups) : detectCgroups((p) => this.host.readFile(p));
    return this.cgroupHost;
  }

  /** Called when a deadline was set, moved or cleared; the reaper (ttl.ts) replaces it while it runs. */
  deadlinesChanged: () => void = () => {};

  /** Delete a VM's row; its lease is released through the network domain first. */
  deleteRow(name: string): void {
    this.ctx.db.transaction(() => {
      this.leases.release(name);
      this.repo.delete(name);
    })();
  }
}
