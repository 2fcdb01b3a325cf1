import { mkdir, rm, stat } from 'node:fs/promises';
import { BangerError, ErrorCode, errorMessage, throwIfAborted } from '../core/errors.js';
import { toolEnv } from '../core/exec.js';
import { exists, parseSize } from '../core/fsutil.js';
import { UndoStack } from '../core/undo.js';
import type { Context } from '../core/context.js';
import { kvmUsable, realHost, type HostProbe } from '../core/host.js';
import type { ImageService } from '../images/service.js';
import type { KernelService } from '../kernels/service.js';
import type { NetworkService } from '../network/service.js';
import { tapName } from '../network/links.js';
import type { ProgressEvent } from '../core/operation.js';
import { agentRequest } from './agent.js';
import { FIRST_BOOT, tscKhzFromCpuinfo } from './cmdline.js';
import { readFrom } from './console.js';
import { removeConsole } from './console-log.js';
import type { ImageView, KernelView, Leases } from './deps.js';
import { DriverRegistry } from './drivers/registry.js';
import type { VmHandle, VmmDriver, VmmKind } from './drivers/types.js';
import { planNet, type BootPlan } from './plan.js';
import { StepRunner } from '../core/steps.js';
import type { VmmChoiceName } from '../core/vmm.js';
import { vmFiles, type VmFiles } from './files.js';
import { KeyedLock } from '../core/lock.js';
import { generateName, newVmId } from './names.js';
import { buildSeedDisk, buildWorkDisk } from './seed.js';
import { resolvePackageSource } from './package-source.js';
import { ensureClientKey, HostKeyPool, pinHostKey, sshCommonOptions, sshOptions, sshPaths, unpinHostKey, writeSshConfig, type SshPaths } from './ssh.js';
import { VmRepo, type VmRecord, type VmSpec } from './store.js';
import { reconcileVms } from './reconcile.js';
import { settleAll, sizeArg } from './args.js';

export { MAX_DISK_BYTES } from './args.js';
import { launchSpec } from './launch.js';
import { waitReady, type Stage } from './readiness.js';
import { bangerGid } from '../core/group.js';
import { testPause } from './testpause.js';
import { PortForwards } from './ports.js';
import { parseMountSpecs, parsePortSpecs } from './publish-spec.js';
import { checkMounts, seedMountsFile, startVirtiofsd, stopVirtiofsd } from './mounts.js';
import { initScriptStep, keptOnFailure, verifyMountsStep } from './create-extras.js';

export interface CreateParams {
  image: string;
  name?: string;
  kernel?: string;
  vcpu?: number;
  memoryMiB?: number;
  diskSize?: string;
  workDisk?: string;
  nat?: boolean;
  start?: boolean;
  wait?: boolean;
  vmm?: VmmChoiceName;
  /** Archive base URL for the first boot's install (default: config firstBoot.packageMirror). */
  packageMirror?: string;
  /** HTTP proxy for the first boot's install (default: config firstBoot.packageProxy). */
  packageProxy?: string;
  /** `-p [HOSTIP:]HOSTPORT:GUESTPORT[/tcp]` specs (publish-spec.ts). */
  ports?: string[];
  /** `--port-max-conns` / `--port-idle-timeout` (default: config ports; stored in spec.portLimits). */
  portMaxConnections?: number;
  portIdleTimeoutSeconds?: number;
  /** `--mount HOSTDIR:GUESTDIR[:ro]` specs (QEMU only). */
  mounts?: string[];
  /** `--init-script`: the file's bytes, base64; run once as root after the first boot. */
  initScript?: string;
  /** Keep the VM (do not unwind) when create fails after its record exists. */
  keepOnFailure?: boolean;
}

export interface OpContext {
  signal?: AbortSignal;
  progress?: (ev: ProgressEvent) => void;
}


/** A VM as returned over RPC: the record plus what was observed on the host. */
export interface VmView extends VmRecord {
  running: boolean;
  dir: string;
  console: string;
  sshCommand?: string;
}


/**
 * VMs: lifecycle, disks, SSH, reconcile. Create is a named, ordered list of steps (record+lease,
 * disk, seed, network, vmm, boot, ssh); each registers its undo the moment it happens and a
 * failure unwinds newest first, leaving no tap, rule, lease, process or file behind.
 * Operations on one VM are serialised.
 */
export class VmService {
  readonly repo: VmRepo;
  readonly ssh: SshPaths;
  private readonly locks = new KeyedLock();
  private readonly host: HostProbe;
  /** The VMM drivers of this service (the build's, or a test's). */
  readonly drivers: DriverRegistry;
  /** gid of the `banger` group (client key copy readable by it); looked up when unset. */
  private readonly gid?: number;
  /** VMs inside a start sequence: `observe` must not mark them stopped meanwhile. */
  private readonly busy = new Set<string>();
  /** Host keys made ahead of time (off the create path). */
  readonly hostKeys: HostKeyPool;
  /** rootfs (path, inode, mtime) → has banger's first-boot script: debugfs once per image build. */
  private readonly firstBootCache = new Map<string, boolean>();
  /** Published ports (`-p`): listeners in the daemon forwarding to guests (ports.ts). */
  readonly forwards: PortForwards;

  constructor(
    readonly ctx: Context,
    readonly deps: { kernels: KernelService; images: ImageService; network: NetworkService },
    opts: { host?: HostProbe; drivers?: DriverRegistry | Partial<Record<VmmKind, VmmDriver>>; bangerGid?: number } = {},
  ) {
    this.repo = new VmRepo(ctx.db, deps.network);
    this.ssh = sshPaths(ctx.layout.ssh);
    this.host = opts.host ?? realHost;
    const d = opts.drivers;
    this.drivers = d instanceof DriverRegistry ? d : d ? new DriverRegistry(Object.values(d).filter((x): x is VmmDriver => !!x)) : DriverRegistry.fromBuild({ exec: ctx.exec, binaries: ctx.config.binaries, firecracker: ctx.config.firecracker });
    this.gid = opts.bangerGid;
    this.forwards = new PortForwards(ctx.log, ctx.config.ports);
    this.hostKeys = new HostKeyPool(ctx.exec, ctx.layout.tmp, 2, (e) => ctx.log.warn('host key pool refill failed', { error: errorMessage(e) }));
  }

  private get net(): NetworkService {
    return this.deps.network;
  }

  /** IP leases belong to the network domain; this service only asks it to release one. */
  private get leases(): Leases {
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

  // ---------------------------------------------------------------- create

  /**
   * Create: plan (every fact derived once) → record (row + lease, one write) → disk, seed and
   * network side by side → launch (vmm, boot, ssh, agent). Each step is named (StepRunner: the
   * step goes into `details.step` of any error), registers its undo the moment it acts, and a
   * failure unwinds newest first after every parallel step settled.
   */
  async create(p: CreateParams, op: OpContext = {}): Promise<VmView> {
    const t0 = Date.now();
    const stage: Stage = (s, message, done) => op.progress?.({ stage: s, message, done, elapsedMs: Date.now() - t0 });
    const name = p.name ?? generateName((n) => !!this.repo.find(n));
    return this.locks.run(name, async (): Promise<VmView> => {
      if (this.repo.find(name)) throw new BangerError(ErrorCode.Exists, `vm '${name}' already exists`, { hint: `pick another --name or remove it: banger vm rm ${name}` });
      const undo = new UndoStack((m, f) => this.ctx.log.warn(m, { vm: name, ...f }));
      const steps = new StepRunner({ undo, signal: op.signal, stage, log: (m, f) => this.ctx.log.debug(m, { vm: name, ...f }) });
      // Input and lookups first, outside the steps: a bad argument is nobody's step and makes nothing.
      const plan = await this.planCreate(name, p);
      const starting = p.start !== false;
      const initScript = p.initScript === undefined ? undefined : Buffer.from(p.initScript, 'base64');
      if (initScript && (!starting || p.wait === false)) throw new BangerError(ErrorCode.Invalid, '--init-script needs the VM started and ready', { hint: 'drop --no-start / --no-wait', details: { field: '--init-script' } });
      try {
        // step ports: bound first, so a host port already taken fails before anything exists
        undo.push('ports', () => this.forwards.close(name));
        await this.forwards.open(name, plan.spec.ports ?? [], () => this.repo.find(name)?.ip ?? undefined, plan.spec.portLimits);
        // step record: VM row (with its MAC) + IP lease in one transaction (UNIQUE ip: never two VMs, one IP)
        await steps.run('record', () => this.record(plan, starting ? 'running' : 'stopped', undo), { silent: true });
        await testPause(this.ctx, 'record', op.signal);

        // Steps disk, seed and network touch different things, so they run side by side; each
        // registers its undo the moment it acts, and settleAll waits for all of them before a
        // failure unwinds. Only then does the VMM start.
        await rm(plan.files.dir, { recursive: true, force: true }); // a stale dir no record owns
        await mkdir(plan.files.dir, { recursive: true, mode: 0o750 });
        undo.push('vm-dir', () => rm(plan.files.dir, { recursive: true, force: true }));
        await settleAll([
          steps.run('disk', () => this.disks(plan, op.signal), { message: `${plan.spec.rootDisk.format === 'qcow2' ? 'qcow2 overlay' : 'copy'} of ${plan.image!.name}` }),
          steps.run('seed', () => this.seed(plan, undo), { message: 'host key + seed disk' }),
          starting ? this.networkUp(plan, steps, true) : undefined,
        ]);
        throwIfAborted(op.signal);
        await testPause(this.ctx, 'network', op.signal);

        if (starting) await this.launch(plan, { steps, wait: p.wait !== false, networkReady: true });
        const mounts = plan.spec.mounts ?? [];
        if (starting && p.wait !== false && mounts.length) await verifyMountsStep(this, this.get(name), mounts, { stage, signal: op.signal });
        if (initScript) await initScriptStep(this, this.get(name), initScript, { stage, signal: op.signal });
        if (!starting) {
          this.repo.setState(name, { state: 'stopped', desiredState: 'stopped' });
          await this.forwards.close(name); // published again by vm start
        }
        this.repo.createDone(name);
        undo.commit();
        return this.view(this.get(name), true);
      } catch (e) {
        if (p.keepOnFailure && this.repo.find(name)) {
          undo.commit();
          this.repo.createDone(name);
          throw keptOnFailure(name, e);
        }
        const failures = await undo.unwind();
        if (failures.length) this.ctx.log.error('create unwind incomplete', { vm: name, failures });
        throw e;
      }
    }).finally(() => {
      // Top the host key pool up once the answer is on its way, not while this create runs.
      setTimeout(() => void this.hostKeys.refill(), 100).unref();
    });
  }

  /** The plan of a create: image, kernel, VMM (KVM probed once) and spec; nothing is made yet. */
  private async planCreate(name: string, p: CreateParams): Promise<BootPlan> {
    const image: ImageView = this.deps.images.get(p.image);
    const kernelName = p.kernel ?? image.kernelRef ?? this.deps.kernels.defaultName();
    const kernel: KernelView = this.deps.kernels.get(kernelName);
    const choice = await this.drivers.select(p.vmm ?? this.ctx.config.vm.vmm, this.host);
    const driver = this.driver(choice.kind);
    driver.bootKernel(kernel); // E_NOT_FOUND now when the kernel has no file this VMM boots
    const diskSizeBytes = p.diskSize === undefined ? undefined : sizeArg('--disk-size', p.diskSize);
    const workDiskBytes = p.workDisk === undefined ? undefined : sizeArg('--work-disk', p.workDisk);
    const firstBoot = image.fromRegistry || (await this.rootfsHasFirstBoot(image.rootfsPath));
    const pkg = resolvePackageSource({ mirror: p.packageMirror, proxy: p.packageProxy }, { mirror: this.ctx.config.firstBoot?.packageMirror, proxy: this.ctx.config.firstBoot?.packageProxy });
    const ports = parsePortSpecs(p.ports ?? []);
    PortForwards.checkConflicts(name, ports, this.repo.list());
    const portLimits = PortForwards.limitsFor(p, ports, this.ctx.config.ports);
    const mounts = await checkMounts(parseMountSpecs(p.mounts ?? []), choice.kind);
    const id = newVmId();
    const handle: VmHandle = { id, name, files: this.files(name) };
    const spec: VmSpec = {
      vcpu: p.vcpu ?? this.ctx.config.vm.vcpu,
      memoryMiB: p.memoryMiB ?? this.ctx.config.vm.memoryMiB,
      diskSizeBytes,
      workDiskBytes,
      nat: !!p.nat,
      firstBoot,
      ...(pkg.mirror ? { packageMirror: pkg.mirror } : {}),
      ...(pkg.proxy ? { packageProxy: pkg.proxy } : {}),
      rootDisk: driver.rootDisk(handle),
      ...(ports.length ? { ports, portLimits } : {}),
      ...(mounts.length ? { mounts } : {}),
    };
    return { name, id, image, kernel, driver, choice, files: handle.files, handle, spec };
  }

  /** step record: the row, written once with its MAC, and the lease, in one transaction. */
  private record(plan: BootPlan, desiredState: 'running' | 'stopped', undo: UndoStack): void {
    this.ctx.db.transaction(() => {
      this.net.leaseInTx(plan.name, (ip) => {
        plan.net = this.net.describe(plan.id, ip);
        this.repo.insert({ name: plan.name, id: plan.id, image: plan.image!.name, kernel: plan.kernel.name, spec: plan.spec, desiredState, state: 'created', vmm: plan.choice.kind, vmmReason: plan.choice.reason, tap: plan.net.tap, mac: plan.net.mac, createdAt: new Date().toISOString() });
      });
    })();
    undo.push('record', () => this.deleteRow(plan.name));
  }

  /** step disk: the driver's root disk (its DiskSpec is what gets launched) and the work disk. */
  private async disks(plan: BootPlan, signal?: AbortSignal): Promise<void> {
    const [root] = await settleAll([
      plan.driver.prepareRootDisk({ vm: plan.handle, baseRootfs: plan.image!.rootfsPath, cacheDir: this.ctx.layout.imageCacheDir(plan.image!.name), sizeBytes: plan.spec.diskSizeBytes, signal }),
      plan.spec.workDiskBytes !== undefined ? buildWorkDisk(this.ctx.exec, plan.files.work, plan.spec.workDiskBytes) : undefined,
    ]);
    plan.rootDisk = root;
  }

  /** step seed: host key made before first boot, pinned; seed disk for the first-boot script. */
  private async seed(plan: BootPlan, undo: UndoStack): Promise<void> {
    const net = planNet(plan);
    const gid = this.gid ?? (await bangerGid());
    const [clientPub, hostKey] = await settleAll([ensureClientKey(this.ctx.exec, this.ssh, gid), this.hostKeys.takePair(plan.files.hostKey, plan.name)]);
    plan.hostKey = hostKey;
    await buildSeedDisk(this.ctx.exec, plan.files.seed, this.ctx.layout.tmp, { name: plan.name, net, hostKey: hostKey.priv, hostKeyPub: hostKey.pub, authorizedKey: clientPub, growRoot: plan.spec.diskSizeBytes !== undefined, packageMirror: plan.spec.packageMirror, packageProxy: plan.spec.packageProxy, mounts: seedMountsFile(plan.spec.mounts ?? []) });
    undo.push('known_hosts', () => unpinHostKey(this.ssh, net.ip, plan.name));
    await pinHostKey(this.ssh, net.ip, plan.name, hostKey.pub);
    undo.push('ssh-config', async () => void (await this.refreshSshConfig(plan.name)));
    await this.refreshSshConfig();
  }

  /** Delete a VM's row; its lease is released through the network domain first. */
  private deleteRow(name: string): void {
    this.ctx.db.transaction(() => {
      this.leases.release(name);
      this.repo.delete(name);
    })();
  }

  // ---------------------------------------------------------------- start / stop

  async start(names: string[], op: OpContext = {}, o: { wait?: boolean } = {}): Promise<VmView[]> {
    return this.eachLocked(names, async (name) => {
      const vm = this.get(name);
      if ((await this.observe(vm)).running) return this.view(this.get(name));
      const t0 = Date.now();
      const stage: Stage = (s, message, done) => op.progress?.({ stage: s, key: names.length > 1 ? name : undefined, message, done, elapsedMs: Date.now() - t0 });
      const undo = new UndoStack((m, f) => this.ctx.log.warn(m, { vm: name, ...f }));
      const steps = new StepRunner({ undo, signal: op.signal, stage, log: (m, f) => this.ctx.log.debug(m, { vm: name, ...f }) });
      try {
        const plan = await this.planStart(vm);
        await this.launch(plan, { steps, wait: o.wait !== false });
        undo.commit();
      } catch (e) {
        await undo.unwind();
        this.repo.setState(name, { state: 'stopped', pid: null });
        throw e;
      }
      return this.view(this.get(name));
    });
  }

  /** The plan of a start: the row's kernel and VMM, KVM probed once, the network described once. */
  private async planStart(vm: VmRecord): Promise<BootPlan> {
    if (!vm.ip) throw new BangerError(ErrorCode.Internal, `vm '${vm.name}' has no IP lease`);
    const kernel: KernelView = this.deps.kernels.get(vm.kernel);
    const driver = this.driver(vm.vmm);
    const probe = await driver.probe({ probe: this.host, kvm: await kvmUsable(this.host) });
    const handle = this.handle(vm);
    return { name: vm.name, id: vm.id, kernel, driver, choice: { kind: driver.kind, kvm: probe.kvm, reason: vm.vmmReason }, files: handle.files, handle, spec: vm.spec, net: this.net.describe(vm.id, vm.ip) };
  }

  /** Run `fn` for each name in order, under that VM's lock; every name must exist before any runs. */
  private async eachLocked<T>(names: string[], fn: (name: string) => Promise<T>): Promise<T[]> {
    names.forEach((n) => this.get(n));
    const out: T[] = [];
    for (const name of names) out.push(await this.locks.run(name, () => fn(name)));
    return out;
  }

  /**
   * Boot a planned VM (create and start): network (unless create already made it) → vmm →
   * boot → ssh → agent. Each side effect registers its undo on the runner's stack.
   */
  private async launch(plan: BootPlan, o: { steps: StepRunner; wait: boolean; networkReady?: boolean }): Promise<void> {
    this.busy.add(plan.name);
    try {
      await this.launchInner(plan, o);
    } finally {
      this.busy.delete(plan.name);
    }
  }

  private async launchInner(plan: BootPlan, o: { steps: StepRunner; wait: boolean; networkReady?: boolean }): Promise<void> {
    const { steps } = o;
    const { driver, handle } = plan;
    const net = planNet(plan);
    if (!o.networkReady) await this.networkUp(plan, steps, false);
    throwIfAborted(steps.signal);

    // step ports (a create opened them already: open is idempotent)
    steps.undo('ports', () => this.forwards.close(plan.name));
    await this.forwards.open(plan.name, plan.spec.ports ?? [], () => this.repo.find(plan.name)?.ip ?? undefined, plan.spec.portLimits);
    // step mounts: virtiofsd before QEMU (which connects to its socket); it exits with QEMU
    steps.undo('virtiofsd', () => stopVirtiofsd(plan.files.dir, plan.spec.mounts ?? []));
    await startVirtiofsd(this.ctx.exec, plan.files.dir, plan.spec.mounts ?? []);
    const { pid } = await steps.run(
      'vmm',
      async () => {
        const spec = launchSpec({ instance: this.net.instance, vm: { id: plan.id, name: plan.name, spec: plan.spec, ip: net.ip }, kernel: plan.kernel, driver, files: plan.files, net, subnet: this.net.subnet(), kvm: plan.choice.kvm, tscKhz: plan.choice.kvm ? undefined : tscKhzFromCpuinfo(await this.host.readFile('/proc/cpuinfo')), rootDisk: plan.rootDisk });
        await removeConsole(driver.consolePath(handle));
        this.repo.setState(plan.name, { state: 'starting', desiredState: 'running' });
        throwIfAborted(steps.signal);
        // Registered before the start: a start cut short (cancel, timeout) may have left a VMM
        // behind; kill finds it by its pid file and control socket, and is a no-op when there is none.
        steps.undo('vmm', () => driver.kill(handle, 'SIGKILL'));
        const r = await driver.launch(spec, { signal: steps.signal });
        this.repo.setState(plan.name, { state: 'running', pid: r.pid, startedAt: new Date().toISOString() });
        return r;
      },
      { message: `${driver.kind} starting`, done: (r) => `pid ${r.pid}` },
    );
    await testPause(this.ctx, 'vmm', steps.signal);
    if (!o.wait) return;

    // steps boot, ssh, agent (waitReady reports each; its errors carry their own step)
    await steps.run('ready', () => waitReady({ exec: this.ctx.exec, ssh: this.ssh, ip: net.ip, vm: handle, driver, pid, timeoutMs: this.ctx.config.vm.sshTimeoutSeconds * 1000, firstBootTimeoutMs: this.ctx.config.vm.firstBootTimeoutSeconds * 1000, signal: steps.signal, stage: steps.stage }), { silent: true });
  }

  /**
   * step network: bridge, the VM's tap on it, NAT. `fresh` (a VM created this moment, whose
   * tap name comes from a new id) skips removing a stale tap. Undo is registered before each
   * action (teardown is idempotent), so a half-made tap is removed too.
   */
  private networkUp(plan: BootPlan, steps: StepRunner, fresh: boolean): Promise<void> {
    const net = planNet(plan);
    return steps.run(
      'network',
      async () => {
        const tap = async () => {
          await settleAll([this.net.ensureBridge(), fresh ? undefined : this.net.removeTap(net.tap)]); // a stale tap from a crash
          steps.undo('tap', () => this.net.removeTap(net.tap));
          await this.net.createTap(net, plan.name);
        };
        const nat = async () => {
          steps.undo('nat', () => this.net.disableNat(plan.id));
          await this.net.enableNat(plan.id, net.ip);
        };
        await settleAll([tap(), plan.spec.nat ? nat() : undefined]);
      },
      { message: `${net.ip}/${net.prefix} on ${net.bridge} via ${net.tap}${plan.spec.nat ? ', NAT' : ''}` },
    );
  }

  async stop(names: string[], op: OpContext = {}): Promise<VmView[]> {
    return this.eachLocked(names, async (name) => {
      op.progress?.({ stage: 'stop', key: name, message: 'asking the guest to shut down' });
      await this.stopVm(this.get(name), false);
      op.progress?.({ stage: 'stop', key: name, done: true });
      return this.view(this.get(name));
    });
  }

  async restart(names: string[], op: OpContext = {}): Promise<VmView[]> {
    await this.stop(names, op);
    return this.start(names, op);
  }

  /** Send a signal to the VMM. SIGKILL/SIGTERM also tear the VM's network down. */
  async kill(names: string[], signal: NodeJS.Signals = 'SIGKILL'): Promise<VmView[]> {
    return this.eachLocked(names, async (name) => {
      const vm = this.get(name);
      const driver = this.driver(vm.vmm);
      await driver.kill(this.handle(vm), signal);
      if (!(await driver.status(this.handle(vm), vm.pid)).running) await this.markStopped(vm);
      return this.view(this.get(name));
    });
  }

  /** Graceful stop (or SIGKILL when `force`), then tear down tap and NAT. Idempotent. */
  private async stopVm(vm: VmRecord, force: boolean): Promise<void> {
    const driver = this.driver(vm.vmm);
    const handle = this.handle(vm);
    if (force) await driver.kill(handle, 'SIGKILL');
    else {
      await driver.stop(handle, {
        timeoutMs: this.ctx.config.vm.stopTimeoutSeconds * 1000,
        guestShutdown: vm.ip ? () => this.guestReboot(vm.ip!) : undefined,
      });
    }
    await this.markStopped(vm);
  }

  /** microvm runs with acpi=off: a guest reboot (reboot=t, -no-reboot) is the clean exit. */
  private async guestReboot(ip: string): Promise<void> {
    await this.ctx.exec(['ssh', ...sshOptions(this.ssh), '-o', 'ConnectTimeout=3', `root@${ip}`, 'sync; systemctl reboot || reboot'], { env: toolEnv(), allowFailure: true, timeoutMs: 15000 });
  }

  /** Record the VM as stopped and remove its runtime network (tap, NAT). */
  async markStopped(vm: VmRecord): Promise<void> {
    await this.teardownRuntime(vm);
    this.repo.setState(vm.name, { state: 'stopped', desiredState: 'stopped', pid: null });
  }

  private async teardownRuntime(vm: VmRecord): Promise<void> {
    await this.forwards.close(vm.name);
    await stopVirtiofsd(this.files(vm.name).dir, vm.spec.mounts ?? []);
    await this.net.removeTap(vm.tap ?? tapName(vm.id));
    if (vm.spec.nat) await this.net.disableNat(vm.id);
    for (const p of [this.files(vm.name).qmp, this.files(vm.name).agent, this.files(vm.name).pid]) await rm(p, { force: true });
  }

  // ---------------------------------------------------------------- rm / prune

  /** Remove VMs (a running one is stopped first; `force` kills it instead). */
  async rm(names: string[], force = false, op: OpContext = {}): Promise<{ removed: string[] }> {
    await this.eachLocked(names, async (name) => {
      const vm = this.repo.find(name);
      if (!vm) return;
      op.progress?.({ stage: 'rm', key: name, message: force ? 'killing' : 'stopping' });
      await this.stopVm(vm, force || !(await this.observe(vm)).running);
      await unpinHostKey(this.ssh, vm.ip ?? undefined, name);
      this.deleteRow(name);
      await rm(this.files(name).dir, { recursive: true, force: true });
      op.progress?.({ stage: 'rm', key: name, done: true });
    });
    await this.refreshSshConfig();
    return { removed: names };
  }

  /** Remove every VM that is not running. */
  async prune(op: OpContext = {}): Promise<{ removed: string[] }> {
    const dead: string[] = [];
    for (const vm of this.repo.list()) if (!(await this.observe(vm)).running) dead.push(vm.name);
    if (dead.length) await this.rm(dead, true, op);
    return { removed: dead };
  }

  // ---------------------------------------------------------------- read

  /** Check the host for a VM marked running; a dead one is marked stopped (and its network removed). */
  async observe(vm: VmRecord): Promise<{ running: boolean; pid?: number }> {
    const st = await this.driver(vm.vmm).status(this.handle(vm), vm.pid);
    if (!st.running && (vm.state === 'running' || vm.state === 'starting') && !this.busy.has(vm.name)) {
      await this.markStopped(vm).catch((e) => this.ctx.log.warn('mark stopped failed', { vm: vm.name, error: errorMessage(e) }));
    }
    return st;
  }

  /** The record plus what the host shows; `current`: `vm` was just read (no second read). */
  async view(vm: VmRecord, current = false): Promise<VmView> {
    const driver = this.driver(vm.vmm);
    const st = await driver.status(this.handle(vm), vm.pid);
    const fresh = current ? vm : (this.repo.find(vm.name) ?? vm);
    const files = this.files(vm.name);
    return {
      ...fresh,
      state: st.running ? 'running' : fresh.state === 'running' ? 'stopped' : fresh.state,
      pid: st.running ? (st.pid ?? fresh.pid) : null,
      running: st.running,
      dir: files.dir,
      console: driver.consolePath(this.handle(vm)),
      sshCommand: fresh.ip ? `banger vm ssh ${vm.name}` : undefined,
    };
  }

  async list(): Promise<VmView[]> {
    const out: VmView[] = [];
    for (const vm of this.repo.list()) {
      await this.observe(vm);
      out.push(await this.view(this.repo.find(vm.name) ?? vm));
    }
    return out;
  }

  async show(name: string): Promise<VmView & { files: VmFiles; cmdlineFirstBoot: string | null; rootDiskMethod?: string }> {
    const vm = this.get(name);
    await this.observe(vm);
    const rootDiskMethod = await this.driver(vm.vmm).rootDiskMethod?.(this.handle(vm));
    return { ...(await this.view(this.get(name))), files: this.files(name), cmdlineFirstBoot: vm.spec.firstBoot ? FIRST_BOOT : null, rootDiskMethod };
  }

  async logs(name: string, offset = 0): Promise<{ data: string; offset: number; end: number; running: boolean }> {
    const vm = this.get(name);
    const driver = this.driver(vm.vmm);
    const r = await readFrom(driver.consolePath(this.handle(vm)), offset);
    return { data: r.data, offset: r.offset, end: r.end, running: (await driver.status(this.handle(vm), vm.pid)).running };
  }

  /** What the CLI needs to run OpenSSH itself (stdio inherited, remote exit code). */
  async sshInfo(name: string): Promise<{ name: string; ip: string; user: string; identityFile: string; groupIdentityFile?: string; knownHostsFile: string; options: string[] }> {
    const vm = this.get(name);
    if (!(await this.observe(vm)).running) throw new BangerError(ErrorCode.InUse, `vm '${name}' is not running`, { hint: `start it: banger vm start ${name}` });
    if (!vm.ip) throw new BangerError(ErrorCode.Internal, `vm '${name}' has no IP lease`);
    return {
      name,
      ip: vm.ip,
      user: 'root',
      identityFile: this.ssh.key,
      groupIdentityFile: (await exists(this.ssh.groupKey)) ? this.ssh.groupKey : undefined,
      knownHostsFile: this.ssh.knownHosts,
      options: sshCommonOptions(this.ssh),
    };
  }

  async ports(name: string): Promise<{ name: string; ports: unknown[]; agent: boolean }> {
    const vm = this.get(name);
    if (!(await this.observe(vm)).running) throw new BangerError(ErrorCode.InUse, `vm '${name}' is not running`, { hint: `start it: banger vm start ${name}` });
    const r = await agentRequest(this.driver(vm.vmm), this.handle(vm), 'ports', 5000);
    if (!r) throw new BangerError(ErrorCode.Timeout, `vm '${name}': the guest agent did not answer`, { hint: 'images without banger-vsock-agent cannot list ports; check it with: banger vm ssh NAME -- systemctl status banger-vsock-agent' });
    return { name, ports: Array.isArray(r.ports) ? r.ports : [], agent: true };
  }

  /** Rewrite layout.ssh/config (`Host NAME.vm`) from the VM table. */
  async refreshSshConfig(exclude?: string): Promise<{ path: string; content: string }> {
    const vms = this.repo.list().filter((v) => v.ip && v.name !== exclude).map((v) => ({ name: v.name, ip: v.ip! }));
    await mkdir(this.ssh.dir, { recursive: true, mode: 0o750 });
    const content = await writeSshConfig(this.ssh, vms);
    return { path: this.ssh.config, content };
  }

  /** Called once at daemon start: re-adopt running VMs, mark dead ones stopped, remove orphans. */
  async reconcile(): Promise<void> {
    await reconcileVms({
      log: this.ctx.log,
      vmsDir: this.ctx.layout.vms,
      vmDir: (name) => this.ctx.layout.vmDir(name),
      repo: this.repo,
      network: this.net,
      drivers: this.drivers,
      handle: (vm) => this.handle(vm),
      removeVm: (name) => this.rm([name], true).then(() => undefined),
      markStopped: (vm) => this.markStopped(vm),
      adopted: (vm) => this.forwards.open(vm.name, PortForwards.of(vm), () => this.repo.find(vm.name)?.ip ?? undefined, vm.spec.portLimits),
    });
    void this.hostKeys.refill();
  }

  private async rootfsHasFirstBoot(rootfs: string): Promise<boolean> {
    const st = await stat(rootfs).catch(() => undefined);
    if (!st) return false;
    const key = `${rootfs}:${st.ino}:${st.mtimeMs}:${st.size}`;
    const known = this.firstBootCache.get(key);
    if (known !== undefined) return known;
    const r = await this.ctx.exec(['debugfs', '-R', `stat ${FIRST_BOOT}`, rootfs], { env: toolEnv(), allowFailure: true });
    const has = r.exitCode === 0 && !/not found|File not found/i.test(r.stderr) && /Inode:/.test(r.stdout);
    this.firstBootCache.set(key, has);
    return has;
  }
}
