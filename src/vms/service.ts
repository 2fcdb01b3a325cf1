import { mkdir, readFile, rm, stat } from 'node:fs/promises';
import { BangerError, ErrorCode, errorMessage, throwIfAborted } from '../core/errors.js';
import { toolEnv } from '../core/exec.js';
import { exists, parseSize } from '../core/fsutil.js';
import { UndoStack } from '../core/undo.js';
import type { Context } from '../daemon/context.js';
import { kvmUsable, realHost, type HostProbe } from '../doctor/checks.js';
import type { ImageService } from '../images/service.js';
import type { KernelService } from '../kernels/service.js';
import type { NetworkService } from '../network/service.js';
import { macForIp } from '../network/subnet.js';
import { tapName } from '../network/links.js';
import type { ProgressEvent } from '../rpc/protocol.js';
import { agentRequest } from './agent.js';
import { FIRST_BOOT, tscKhzFromCpuinfo } from './cmdline.js';
import { readFrom } from './console.js';
import { defaultKernelName, getImage, getKernel } from './deps.js';
import { DriverRegistry } from './drivers/registry.js';
import type { DiskSpec, VmHandle, VmmDriver, VmmKind } from './drivers/types.js';
import { vmFiles, type VmFiles } from './files.js';
import { KeyedLock } from './lock.js';
import { generateName, newVmId } from './names.js';
import { buildSeedDisk, buildWorkDisk } from './seed.js';
import { resolvePackageSource } from './package-source.js';
import { ensureClientKey, HostKeyPool, pinHostKey, sshCommonOptions, sshOptions, sshPaths, unpinHostKey, writeSshConfig, type SshPaths } from './ssh.js';
import { VmRepo, type VmRecord, type VmSpec } from './store.js';
import { reconcileVms } from './reconcile.js';
import { launchSpec } from './launch.js';
import { waitReady, type Stage } from './readiness.js';
import { bangerGid } from '../daemon/system.js';
import { testPause } from './testpause.js';

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
  vmm?: 'auto' | 'qemu' | 'firecracker';
  /** Archive base URL for the first boot's install (default: config firstBoot.packageMirror). */
  packageMirror?: string;
  /** HTTP proxy for the first boot's install (default: config firstBoot.packageProxy). */
  packageProxy?: string;
}

export interface OpContext {
  signal?: AbortSignal;
  progress?: (ev: ProgressEvent) => void;
}

type StartOptions = OpContext & { stage: Stage; undo: UndoStack; wait: boolean; /** create already ran the network step */ networkReady?: boolean; /** the root disk create just prepared */ rootDisk?: DiskSpec };

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

  constructor(
    readonly ctx: Context,
    readonly deps: { kernels: KernelService; images: ImageService; network: NetworkService },
    opts: { host?: HostProbe; drivers?: DriverRegistry | Partial<Record<VmmKind, VmmDriver>>; bangerGid?: number } = {},
  ) {
    this.repo = new VmRepo(ctx.db);
    this.ssh = sshPaths(ctx.layout.ssh);
    this.host = opts.host ?? realHost;
    const d = opts.drivers;
    this.drivers = d instanceof DriverRegistry ? d : d ? new DriverRegistry(Object.values(d).filter((x): x is VmmDriver => !!x)) : DriverRegistry.fromBuild({ exec: ctx.exec, binaries: ctx.config.binaries });
    this.gid = opts.bangerGid;
    this.hostKeys = new HostKeyPool(ctx.exec, ctx.layout.tmp, 2, (e) => ctx.log.warn('host key pool refill failed', { error: errorMessage(e) }));
  }

  private get net(): NetworkService {
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

  async create(p: CreateParams, op: OpContext = {}): Promise<VmView> {
    const t0 = Date.now();
    const stage: Stage = (s, message, done) => op.progress?.({ stage: s, message, done, elapsedMs: Date.now() - t0 });
    const name = p.name ?? generateName((n) => !!this.repo.find(n));
    return this.locks.run(name, async (): Promise<VmView> => {
      if (this.repo.find(name)) throw new BangerError(ErrorCode.Exists, `vm '${name}' already exists`, { hint: `pick another --name or remove it: banger vm rm ${name}` });
      const image = await getImage(this.ctx, this.deps.images, p.image);
      const kernelName = p.kernel ?? image.kernelRef ?? (await defaultKernelName(this.ctx, this.deps.kernels));
      const kernel = await getKernel(this.ctx, this.deps.kernels, kernelName);
      const choice = await this.drivers.select(p.vmm ?? this.ctx.config.vm.vmm, this.host);
      const driver = this.driver(choice.kind);
      driver.bootKernel(kernel); // E_NOT_FOUND now when the kernel has no file this VMM boots
      const diskSizeBytes = p.diskSize === undefined ? undefined : sizeArg('--disk-size', p.diskSize);
      const workDiskBytes = p.workDisk === undefined ? undefined : sizeArg('--work-disk', p.workDisk);
      const firstBoot = image.fromRegistry || (await this.rootfsHasFirstBoot(image.rootfsPath));
      const pkg = resolvePackageSource({ mirror: p.packageMirror, proxy: p.packageProxy }, { mirror: this.ctx.config.firstBoot?.packageMirror, proxy: this.ctx.config.firstBoot?.packageProxy });
      const id = newVmId();
      const files = this.files(name);
      const handle: VmHandle = { id, name, files };
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
      };
      const undo = new UndoStack((m, f) => this.ctx.log.warn(m, { vm: name, ...f }));
      try {
        // step record: VM row + IP lease in one transaction (UNIQUE ip: never two VMs, one IP)
        const ip = this.ctx.db.transaction(() => {
          this.repo.insert({ name, id, image: image.name, kernel: kernel.name, spec, desiredState: p.start === false ? 'stopped' : 'running', state: 'created', vmm: choice.kind, vmmReason: choice.reason, tap: tapName(id), mac: null, createdAt: new Date().toISOString() });
          const leased = this.net.leaseInTx(name);
          this.ctx.db.prepare('UPDATE vms SET mac = ? WHERE name = ?').run(macForIp(leased), name);
          return leased;
        })();
        undo.push('record', () => this.repo.delete(name));
        throwIfAborted(op.signal);
        await testPause(this.ctx, 'record', op.signal);

        // Steps disk, seed and network touch different things, so they run side by side; each
        // registers its undo the moment it acts, and settleAll waits for all of them before a
        // failure unwinds. Only then does the VMM start.
        await rm(files.dir, { recursive: true, force: true }); // a stale dir no record owns
        await mkdir(files.dir, { recursive: true, mode: 0o750 });
        undo.push('vm-dir', () => rm(files.dir, { recursive: true, force: true }));
        let rootDisk: DiskSpec | undefined;
        const disk = async () => {
          stage('disk', `${spec.rootDisk.format === 'qcow2' ? 'qcow2 overlay' : 'copy'} of ${image.name}`);
          [rootDisk] = await settleAll([
            driver.prepareRootDisk({ vm: handle, baseRootfs: image.rootfsPath, cacheDir: this.ctx.layout.imageCacheDir(image.name), sizeBytes: diskSizeBytes, signal: op.signal }),
            workDiskBytes !== undefined ? buildWorkDisk(this.ctx.exec, files.work, workDiskBytes) : undefined,
          ]);
          stage('disk', undefined, true);
        };
        // step seed: host key made before first boot, pinned; seed disk for the first-boot script
        const seed = async () => {
          stage('seed', 'host key + seed disk');
          const gid = this.gid ?? (await bangerGid());
          const [clientPub, hostPub] = await settleAll([ensureClientKey(this.ctx.exec, this.ssh, gid), this.hostKeys.take(files.hostKey, name)]);
          const net = this.net.describe(id, ip);
          await buildSeedDisk(this.ctx.exec, files.seed, this.ctx.layout.tmp, { name, net, hostKey: await readFile(files.hostKey, 'utf8'), hostKeyPub: hostPub, authorizedKey: clientPub, growRoot: diskSizeBytes !== undefined, packageMirror: pkg.mirror, packageProxy: pkg.proxy });
          undo.push('known_hosts', () => unpinHostKey(this.ssh, ip, name));
          await pinHostKey(this.ssh, ip, name, hostPub);
          undo.push('ssh-config', async () => void (await this.refreshSshConfig(name)));
          await this.refreshSshConfig();
          stage('seed', undefined, true);
        };
        const starting = p.start !== false;
        await settleAll([disk(), seed(), starting ? this.networkUp(this.get(name), { stage, undo, signal: op.signal }, true) : undefined]);
        throwIfAborted(op.signal);
        await testPause(this.ctx, 'network', op.signal);

        if (starting) await this.startSteps(this.get(name), { ...op, stage, undo, wait: p.wait !== false, networkReady: true, rootDisk });
        else this.repo.setState(name, { state: 'stopped', desiredState: 'stopped' });
        this.repo.createDone(name);
        undo.commit();
        return this.view(this.get(name));
      } catch (e) {
        const failures = await undo.unwind();
        if (failures.length) this.ctx.log.error('create unwind incomplete', { vm: name, failures });
        throw e;
      }
    }).finally(() => {
      // Top the host key pool up once the answer is on its way, not while this create runs.
      setTimeout(() => void this.hostKeys.refill(), 100).unref();
    });
  }

  // ---------------------------------------------------------------- start / stop

  async start(names: string[], op: OpContext = {}, o: { wait?: boolean } = {}): Promise<VmView[]> {
    return this.eachLocked(names, async (name) => {
      const vm = this.get(name);
      if ((await this.observe(vm)).running) return this.view(this.get(name));
      const t0 = Date.now();
      const stage: Stage = (s, message, done) => op.progress?.({ stage: s, key: names.length > 1 ? name : undefined, message, done, elapsedMs: Date.now() - t0 });
      const undo = new UndoStack((m, f) => this.ctx.log.warn(m, { vm: name, ...f }));
      try {
        await this.startSteps(vm, { ...op, stage, undo, wait: o.wait !== false });
        undo.commit();
      } catch (e) {
        await undo.unwind();
        this.repo.setState(name, { state: 'stopped', pid: null });
        throw e;
      }
      return this.view(this.get(name));
    });
  }

  /** Run `fn` for each name in order, under that VM's lock; every name must exist before any runs. */
  private async eachLocked<T>(names: string[], fn: (name: string) => Promise<T>): Promise<T[]> {
    names.forEach((n) => this.get(n));
    const out: T[] = [];
    for (const name of names) out.push(await this.locks.run(name, () => fn(name)));
    return out;
  }

  /** network → vmm → boot → ssh → agent. Each side effect registers its undo on `undo`. */
  private async startSteps(vm: VmRecord, o: StartOptions): Promise<void> {
    this.busy.add(vm.name);
    try {
      await this.startStepsInner(vm, o);
    } finally {
      this.busy.delete(vm.name);
    }
  }

  private async startStepsInner(vm: VmRecord, o: StartOptions): Promise<void> {
    if (!vm.ip) throw new BangerError(ErrorCode.Internal, `vm '${vm.name}' has no IP lease`);
    const kernel = await getKernel(this.ctx, this.deps.kernels, vm.kernel);
    const driver = this.driver(vm.vmm);
    const handle = this.handle(vm);
    const files = handle.files;
    const net = this.net.describe(vm.id, vm.ip);

    if (!o.networkReady) await this.networkUp(vm, o, false);
    throwIfAborted(o.signal);

    // step vmm
    o.stage('vmm', `${driver.kind} starting`);
    const kvm = (await kvmUsable(this.host)).usable;
    const spec = launchSpec({ instance: this.net.instance, vm: { ...vm, ip: vm.ip }, kernel, driver, files, net, subnet: this.net.subnet(), kvm, tscKhz: tscKhzFromCpuinfo(await this.host.readFile('/proc/cpuinfo')), rootDisk: o.rootDisk });
    await rm(driver.consolePath(handle), { force: true });
    this.repo.setState(vm.name, { state: 'starting', desiredState: 'running' });
    throwIfAborted(o.signal);
    // Registered before the start: a start cut short (cancel, timeout) may have left a VMM
    // behind; kill finds it by its pid file and QMP socket, and is a no-op when there is none.
    o.undo.push('vmm', () => driver.kill(handle, 'SIGKILL'));
    const { pid } = await driver.launch(spec, { signal: o.signal });
    this.repo.setState(vm.name, { state: 'running', pid, startedAt: new Date().toISOString() });
    o.stage('vmm', `pid ${pid}`, true);
    await testPause(this.ctx, 'vmm', o.signal);
    if (!o.wait) return;

    // steps boot, ssh, agent
    await waitReady({ exec: this.ctx.exec, ssh: this.ssh, ip: vm.ip, vm: handle, driver, pid, timeoutMs: this.ctx.config.vm.sshTimeoutSeconds * 1000, firstBootTimeoutMs: this.ctx.config.vm.firstBootTimeoutSeconds * 1000, signal: o.signal, stage: o.stage });
  }

  /**
   * step network: bridge, the VM's tap on it, NAT. `fresh` (a VM created this moment, whose
   * tap name comes from a new id) skips removing a stale tap. Undo is registered before each
   * action (teardown is idempotent), so a half-made tap is removed too.
   */
  private async networkUp(vm: VmRecord, o: { stage: Stage; undo: UndoStack; signal?: AbortSignal }, fresh: boolean): Promise<void> {
    if (!vm.ip) throw new BangerError(ErrorCode.Internal, `vm '${vm.name}' has no IP lease`);
    const ip = vm.ip;
    const net = this.net.describe(vm.id, ip);
    o.stage('network', `${net.ip}/${net.prefix} on ${net.bridge} via ${net.tap}${vm.spec.nat ? ', NAT' : ''}`);
    const tap = async () => {
      await settleAll([this.net.ensureBridge(), fresh ? undefined : this.net.removeTap(net.tap)]); // a stale tap from a crash
      o.undo.push('tap', () => this.net.removeTap(net.tap));
      await this.net.createTap(net, vm.name);
    };
    const nat = async () => {
      o.undo.push('nat', () => this.net.disableNat(vm.id));
      await this.net.enableNat(vm.id, ip);
    };
    await settleAll([tap(), vm.spec.nat ? nat() : undefined]);
    o.stage('network', undefined, true);
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
      this.repo.delete(name);
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

  async view(vm: VmRecord): Promise<VmView> {
    const driver = this.driver(vm.vmm);
    const st = await driver.status(this.handle(vm), vm.pid);
    const fresh = this.repo.find(vm.name) ?? vm;
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

  async logs(name: string, offset = 0): Promise<{ data: string; offset: number; running: boolean }> {
    const vm = this.get(name);
    const driver = this.driver(vm.vmm);
    const r = await readFrom(driver.consolePath(this.handle(vm)), offset);
    return { data: r.data, offset: r.offset, running: (await driver.status(this.handle(vm), vm.pid)).running };
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
    await reconcileVms(this);
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

/** Like Promise.all, but waits for every step to finish before throwing the first failure (so the undo never races a step still writing). */
async function settleAll<T extends readonly unknown[]>(ps: T): Promise<{ -readonly [K in keyof T]: Awaited<T[K]> }> {
  const rs = await Promise.allSettled(ps);
  const bad = rs.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (bad) throw bad.reason;
  return rs.map((r) => (r as PromiseFulfilledResult<unknown>).value) as { -readonly [K in keyof T]: Awaited<T[K]> };
}

/** Largest --disk-size / --work-disk accepted (a sparse file or qcow2 can claim any size; 16 TiB is plenty). */
export const MAX_DISK_BYTES = 16 * 1024 ** 4;

function sizeArg(flag: string, v: string): number {
  try {
    const n = parseSize(v);
    if (n <= 0) throw new Error('must be positive');
    if (n > MAX_DISK_BYTES) throw new Error('must be at most 16T');
    return n;
  } catch (e) {
    throw new BangerError(ErrorCode.Invalid, `${flag} '${v}': ${errorMessage(e)}`, { hint: 'examples: 512M, 8G, 2GiB', details: { field: flag } });
  }
}
