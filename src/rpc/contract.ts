import { z } from 'zod';
import { PackageUrl } from '../core/package-url.js';
import { CpuQuota, DiskBps, DiskIops, PortIdleTimeoutSeconds, PortMaxConnections } from '../core/limits.js';
import { VMM_CHOICES } from '../core/vmm.js';
import { AllowList, Duration, Egress, MemoryMiB, Name, OnExpire, Size, Vcpu } from './schemas.js';
import type {
  Image,
  ImageDetail,
  NamedSnapshot,
  WarmSnapshot,
  ImagePrepareResult,
  Kernel,
  KernelCatalog,
  KernelDetail,
  KernelPullResult,
  KernelRemoved,
  PruneResult,
  Removed,
  DaemonStatus,
  TeardownResult,
  Vm,
  VmDetail,
  VmLogs,
  VmPorts,
  SshConfigFile,
  SshInfo,
  LoginResult,
  LogoutResult,
} from './types.js';

/**
 * The banger RPC contract: every JSON-RPC method the daemon serves, with the schema its params
 * are validated against (by the server, before any handler runs) and the type of its result.
 * The daemon's handlers are typed against it (`HandlersFor`, `rpc/bind.ts`), and so is every
 * client (`RpcClient.request`, `rpc/client.ts`; the CLI), so neither side can drift without a
 * compile error. This module and `rpc/types.ts`, `rpc/schemas.ts` are what a TypeScript SDK
 * exports: they import nothing from the daemon or a domain (the shapes they send are in
 * `core/shapes/`, below both).
 *
 * Conventions: one verb per action (`rm` removes, old names are `legacyAliases`); lists return
 * arrays; removals return `{ removed: string[] }` (the names removed); sizes are accepted as a
 * number of bytes or a string such as "8G" and parsed once, here (`Size`).
 */

/** A method: its params schema, and its result type (a phantom: only its type is used). */
export interface MethodSpec<P extends z.ZodTypeAny = z.ZodTypeAny, R = unknown> {
  params: P;
  /** Documentation only; never read at run time. */
  readonly result?: R;
  /** True when the method reports progress (`$/progress` notifications) while it runs. */
  progress?: boolean;
}

function def<P extends z.ZodTypeAny>(params: P, opts: { progress?: boolean } = {}) {
  return { returns: <R>(): MethodSpec<P, R> => ({ params, ...opts }) };
}

const None = z.object({}).strict();
const Names = z.array(Name).min(1).max(64);
const AbsPath = z
  .string()
  .min(1)
  .max(4096)
  .refine((p) => p.startsWith('/'), 'must be an absolute path');
const Registry = z
  .string()
  .min(1)
  .max(255)
  .regex(/^(?:https?:\/\/)?[a-zA-Z0-9.[\]:-]+(?:\/.*)?$/, 'must be a registry host[:port]');
/** An image's ext4 size: a `Size`, rounded up to the 4 KiB block size. */
const ImageSize = Size.transform((n) => Math.ceil(n / 4096) * 4096).optional();
const Signal = z.enum(['SIGKILL', 'SIGTERM', 'SIGINT', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2', 'SIGSTOP', 'SIGCONT']);
/**
 * Catalog URLs a client may add (the CLI forwards BANGER_KERNEL_CATALOGS): http(s) only, so a
 * client cannot make the root daemon read local files (file:// catalogs belong in the config).
 */
const ClientCatalogs = z
  .array(
    z
      .string()
      .max(2048)
      .url()
      .refine((u) => /^https?:\/\//i.test(u), 'must be an http:// or https:// URL (file:// catalogs go in the daemon config)'),
  )
  .max(16)
  .optional();
/** VM disk sizes stay strings on the wire for now: the vms domain parses them (see docs/architecture.md). */
const DiskSize = z.string().min(1).max(32);

/** `vm.exec` params (docs/agent.md): the request the guest agent runs. */
const Arg = z
  .string()
  .max(65536)
  .refine((s) => !s.includes('\0'), 'must not contain NUL');
const GuestPath = AbsPath.refine((p) => !p.includes('\0'), 'must not contain NUL');
export const ExecParams = z
  .object({
    name: Name,
    argv: z.array(Arg).min(1).max(4096),
    env: z
      .array(
        z
          .string()
          .max(65536)
          .regex(/^[A-Za-z_][A-Za-z0-9_]*=[^\0]*$/s, 'must be KEY=VALUE'),
      )
      .max(1024)
      .optional(),
    workdir: GuestPath.optional(),
    user: z
      .string()
      .max(64)
      .regex(/^[A-Za-z0-9_.][A-Za-z0-9_.-]*(:[0-9]+)?$/, 'must be a user name or UID[:GID]')
      .optional(),
    tty: z.boolean().optional(),
    rows: z.number().int().min(0).max(65535).optional(),
    cols: z.number().int().min(0).max(65535).optional(),
  })
  .strict();
const GuestPathParams = z.object({ name: Name, path: GuestPath }).strict();
/** The reply of a streaming method; the connection then carries protocol v2 frames on stream 1. */
export interface StreamStarted {
  streaming: true;
  stream: 1;
  agent?: unknown;
  /** The VM was paused and was resumed first (milliseconds it took). */
  resumedMs?: number;
}

export const methods = {
  // daemon
  /** Who is serving: version, pid, root, socket, files, uptime. */
  'daemon.status': def(None).returns<DaemonStatus>(),
  /** Stop the daemon shortly after replying (VMs keep running). */
  'daemon.shutdown': def(None).returns<{ stopping: true }>(),
  /**
   * Stop every running VM and remove this instance's taps, NAT rules, nft table (when unused)
   * and bridge; records and disks stay. The .deb's prerm runs it (`banger system teardown`).
   */
  'daemon.teardown': def(None, { progress: true }).returns<TeardownResult>(),

  // kernels
  /** Pulled and imported kernels. */
  'kernel.list': def(None).returns<Kernel[]>(),
  /** Every catalog entry (embedded and remote) with its state; unreadable remote catalogs become warnings. */
  'kernel.catalog': def(z.object({ catalogs: ClientCatalogs }).strict()).returns<KernelCatalog>(),
  /** One kernel with its manifest. E_NOT_FOUND when it is not pulled. */
  'kernel.show': def(z.object({ name: Name }).strict()).returns<KernelDetail>(),
  /** Download (or build from Debian's archive), verify and install a catalog kernel. */
  'kernel.pull': def(z.object({ name: Name, force: z.boolean().default(false), catalogs: ClientCatalogs }).strict(), {
    progress: true,
  }).returns<KernelPullResult>(),
  /** Remove a kernel; E_IN_USE while a VM uses it unless `force` (then `usedBy` names those VMs). */
  'kernel.rm': def(z.object({ name: Name, force: z.boolean().default(false) }).strict()).returns<KernelRemoved>(),
  /** Install a kernel from local files (absolute paths on the daemon's host). */
  'kernel.import': def(
    z
      .object({
        name: Name,
        vmlinux: AbsPath,
        initrd: AbsPath.optional(),
        modules: AbsPath.optional(),
        kernelVersion: z
          .string()
          .min(1)
          .max(128)
          .regex(/^[A-Za-z0-9._+~-]+$/, 'letters, digits and . _ + ~ - only')
          .optional(),
        distro: z
          .string()
          .min(1)
          .max(64)
          .regex(/^[A-Za-z0-9._-]+$/, 'letters, digits and . _ - only')
          .optional(),
        arch: z
          .string()
          .min(1)
          .max(32)
          .regex(/^[A-Za-z0-9_]+$/, 'letters, digits and _ only')
          .optional(),
        force: z.boolean().default(false),
      })
      .strict(),
    { progress: true },
  ).returns<Kernel>(),

  // images
  /** Pull an OCI image and build its ext4 root filesystem. */
  'image.pull': def(
    z
      .object({
        ref: z.string().min(1).max(512),
        name: Name.optional(),
        kernelRef: Name.optional(),
        platform: z.string().max(64).optional(),
        sizeBytes: ImageSize,
        /** Prepare the image right after the pull (as `image.prepare`), when it needs it. */
        prepare: z.boolean().optional(),
        /** For `prepare`: the install's package mirror and proxy (default: config firstBoot.*). */
        packageMirror: PackageUrl.optional(),
        packageProxy: PackageUrl.optional(),
      })
      .strict(),
    { progress: true },
  ).returns<Image>(),
  /**
   * Prepare an image once (a builder VM runs the first-boot install, scrubs per-VM identity and
   * powers off; VMs then stand on the result). Nothing to do for an image that has systemd and
   * sshd, or that is prepared for the same inputs already (unless `force`).
   */
  'image.prepare': def(
    z
      .object({
        name: Name,
        kernel: Name.optional(),
        packageMirror: PackageUrl.optional(),
        packageProxy: PackageUrl.optional(),
        force: z.boolean().default(false),
        vmm: z.enum(VMM_CHOICES).optional(),
        /** Warm the image right after (`image warm` with the default shape); default: config firstBoot.warmAfterPrepare. */
        warm: z.boolean().optional(),
      })
      .strict(),
    { progress: true },
  ).returns<ImagePrepareResult>(),
  /**
   * Warm an image: boot it once with a shape (vCPU, memory, kernel, VMM) to agent ready and keep
   * its memory and device state; `vm create` of that image and shape then restores it.
   */
  'image.warm': def(
    z
      .object({
        name: Name,
        kernel: Name.optional(),
        vcpu: Vcpu.optional(),
        memoryMiB: MemoryMiB.optional(),
        vmm: z.enum(VMM_CHOICES).optional(),
      })
      .strict(),
    { progress: true },
  ).returns<WarmSnapshot>(),
  /** Build an image from a local rootfs tar or directory. */
  'image.import': def(
    z.object({ name: Name, rootfsTar: AbsPath.optional(), rootfsDir: AbsPath.optional(), kernelRef: Name.optional(), sizeBytes: ImageSize }).strict(),
    { progress: true },
  ).returns<Image>(),
  'image.list': def(None).returns<Image[]>(),
  /** One image with its blobs and the VMs that use it. */
  'image.show': def(z.object({ name: Name }).strict()).returns<ImageDetail>(),
  /** Remove an image; E_IN_USE while a VM uses it unless `force`. */
  'image.rm': def(z.object({ name: Name, force: z.boolean().default(false) }).strict()).returns<Removed>(),
  /** Free content-store blobs nothing references (`removed` is a count here: blobs are digests, not names), and warm snapshots of images that are gone. */
  'system.prune': def(None).returns<PruneResult>(),
  'registry.login': def(
    z.object({ registry: Registry, username: z.string().min(1).max(256), password: z.string().min(1).max(8192) }).strict(),
  ).returns<LoginResult>(),
  'registry.logout': def(z.object({ registry: Registry }).strict()).returns<LogoutResult>(),

  // vms
  /** Create (and by default start) a VM. */
  'vm.create': def(
    z
      .object({
        /** Required unless `from` says it. */
        image: Name.optional(),
        /** `NAME[@TAG]`: start from that VM's named snapshot (its newest when no TAG) instead of booting. */
        from: z
          .string()
          .max(128)
          .regex(/^[A-Za-z0-9][A-Za-z0-9_-]{0,62}(@[A-Za-z0-9][A-Za-z0-9._-]{0,62})?$/)
          .optional(),
        name: Name.optional(),
        kernel: Name.optional(),
        vcpu: Vcpu.optional(),
        memoryMiB: MemoryMiB.optional(),
        diskSize: DiskSize.optional(),
        workDisk: DiskSize.optional(),
        nat: z.boolean().optional(),
        /** `--egress`: deny, nat (= nat: true) or allow (docs/network-policy.md). */
        egress: Egress.optional(),
        /** `--allow CIDR[:PORT[/PROTO]]` and `HOSTNAME[:PORT]` destinations (parsed and checked by the daemon). */
        allow: AllowList.optional(),
        /** `--allow-vm NAME`: VMs this one may exchange traffic with. */
        allowVm: z.array(Name).max(64).optional(),
        start: z.boolean().optional(),
        wait: z.boolean().optional(),
        /** Boot cold even when a warm snapshot of the image fits this shape. */
        cold: z.boolean().optional(),
        vmm: z.enum(VMM_CHOICES).optional(),
        packageMirror: PackageUrl.optional(),
        packageProxy: PackageUrl.optional(),
        /** `-p [HOSTIP:]HOSTPORT:GUESTPORT[/tcp]` specs (parsed and checked by the daemon). */
        ports: z.array(z.string().min(1).max(64)).max(64).optional(),
        /** Clients each published port accepts at once (default: config ports.maxConnections). */
        portMaxConnections: PortMaxConnections.optional(),
        /** Seconds a published port's connection may stay idle before both sides are closed; 0: never (default: config ports.idleTimeoutSeconds). */
        portIdleTimeoutSeconds: PortIdleTimeoutSeconds.optional(),
        /** `--mount HOSTDIR:GUESTDIR[:ro]` specs, HOSTDIR absolute (QEMU only). */
        mounts: z.array(z.string().min(1).max(4096)).max(16).optional(),
        /** `--init-script`: the file's bytes, base64, at most 1 MiB decoded. */
        initScript: z
          .string()
          .max(Math.ceil((1024 * 1024) / 3) * 4)
          .base64()
          .optional(),
        /** Keep the VM when the create fails (no unwind). */
        keepOnFailure: z.boolean().optional(),
        /** Lifetime (`--ttl`): seconds or "10m"; the deadline is stored and survives daemon restarts. */
        ttl: Duration.optional(),
        /** What the deadline does (`--on-expire`; default: config vm.onExpire, stop). Needs a ttl. */
        onExpire: OnExpire.optional(),
        /** Resource limits (docs/limits.md; defaults: config limits): CPU fraction of one host CPU, per-disk IOPS and bytes/s. */
        cpuQuota: CpuQuota.optional(),
        diskIops: DiskIops.optional(),
        diskBps: DiskBps.optional(),
      })
      .strict(),
    { progress: true },
  ).returns<Vm>(),
  'vm.start': def(z.object({ names: Names, wait: z.boolean().optional() }).strict(), { progress: true }).returns<Vm[]>(),
  /** `forced`: the VMM had to be killed, the guest did not shut down within vm.stopTimeoutSeconds. */
  'vm.stop': def(z.object({ names: Names }).strict(), { progress: true }).returns<Array<Vm & { forced: boolean }>>(),
  'vm.restart': def(z.object({ names: Names }).strict(), { progress: true }).returns<Vm[]>(),
  'vm.kill': def(z.object({ names: Names, signal: Signal.optional() }).strict()).returns<Vm[]>(),
  /** Save a running VM's memory, device state and root disk as a named snapshot; it runs on. */
  'vm.snapshot': def(
    z
      .object({
        name: Name,
        tag: z
          .string()
          .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/)
          .optional(),
      })
      .strict(),
    { progress: true },
  ).returns<NamedSnapshot>(),
  'vm.snapshots': def(z.object({ name: Name }).strict()).returns<NamedSnapshot[]>(),
  'vm.snapshotRm': def(z.object({ name: Name, tag: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/) }).strict()).returns<Removed>(),
  /** N new VMs (`newName`, or `newName-1` … when count > 1) from a running VM's state; it runs on. */
  'vm.fork': def(z.object({ name: Name, newName: Name, count: z.number().int().min(1).max(16).optional() }).strict(), { progress: true }).returns<Vm[]>(),
  /** Save each VM's memory and device state to disk and stop its VMM (state `paused`; ports stay reserved). */
  'vm.pause': def(z.object({ names: Names }).strict(), { progress: true }).returns<Vm[]>(),
  /** Restore paused VMs from their saved state. */
  'vm.resume': def(z.object({ names: Names }).strict(), { progress: true }).returns<Vm[]>(),
  /** Remove VMs (stopping them first with `force`). */
  'vm.rm': def(z.object({ names: Names, force: z.boolean().optional() }).strict(), { progress: true }).returns<Removed>(),
  /** Remove every stopped VM. */
  'vm.prune': def(None, { progress: true }).returns<Removed>(),
  'vm.list': def(None).returns<Vm[]>(),
  /** Push a VM's deadline out by `by` (from the current deadline, or now when it has none or it passed). */
  'vm.extend': def(z.object({ name: Name, by: Duration, onExpire: OnExpire.optional() }).strict()).returns<Vm>(),
  /** Change a VM's egress policy (docs/network-policy.md); a running VM's rules change in one nft transaction. */
  'vm.update': def(
    z
      .object({
        name: Name,
        egress: Egress.optional(),
        /** Destinations to add. */
        allow: AllowList.optional(),
        /** Destinations to take out of the allow list. */
        deny: AllowList.optional(),
        allowVm: z.array(Name).max(64).optional(),
        denyVm: z.array(Name).max(64).optional(),
      })
      .strict(),
  ).returns<Vm>(),
  'vm.show': def(z.object({ name: Name }).strict()).returns<VmDetail>(),
  /** Console output from byte `offset` on. */
  'vm.logs': def(z.object({ name: Name, offset: z.number().int().min(0).optional() }).strict()).returns<VmLogs>(),
  'vm.sshInfo': def(z.object({ name: Name }).strict()).returns<SshInfo>(),
  'vm.sshConfig': def(None).returns<SshConfigFile>(),
  'vm.ports': def(z.object({ name: Name }).strict()).returns<VmPorts>(),
  /** Runs a command through the guest agent; after the reply the connection streams (docs/agent.md). */
  'vm.exec': def(ExecParams).returns<StreamStarted>(),
  /** Streams a guest path out as tar (vm cp VM → host); the connection streams after the reply. */
  'vm.cpOut': def(GuestPathParams).returns<StreamStarted>(),
  /** Extracts a tar stream into a guest directory (vm cp host → VM); streams after the reply. */
  'vm.cpIn': def(GuestPathParams).returns<StreamStarted>(),
  /** lstat of a path inside the guest, through its agent (vm cp's path rules). */
  'vm.stat': def(GuestPathParams).returns<{ ok: true; exists: boolean; type?: 'dir' | 'file' | 'symlink' | 'other'; mode?: number; size?: number }>(),
} satisfies Record<string, MethodSpec>;

export type Methods = typeof methods;
export type MethodName = keyof Methods;
/** What a client sends (fields with defaults may be left out). */
export type Params<M extends MethodName> = z.input<Methods[M]['params']>;
/** What a handler receives (validated, defaults filled in). */
export type ParsedParams<M extends MethodName> = z.output<Methods[M]['params']>;
export type Result<M extends MethodName> = NonNullable<Methods[M]['result']>;

/**
 * Old method names the server still answers, so an older CLI keeps working. Each runs the new
 * method and turns its result into the old shape.
 */
export const legacyAliases = {
  'kernel.delete': { method: 'kernel.rm', result: (r: KernelRemoved) => ({ name: r.removed[0], deleted: true as const, usedBy: r.usedBy }) },
  'image.pruneCache': { method: 'system.prune', result: (r: PruneResult) => r },
} satisfies Record<string, { method: MethodName; result: (r: never) => unknown }>;
