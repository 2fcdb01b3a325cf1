import { mkdir, rm } from 'node:fs/promises';
import { BangerError, ErrorCode, throwIfAborted } from '../core/errors.js';
import { bangerGid } from '../core/group.js';
import { StepRunner } from '../core/steps.js';
import { UndoStack } from '../core/undo.js';
import type { VmmChoiceName } from '../core/vmm.js';
import { settleAll, sizeArg } from './args.js';
import { launch, networkUp } from './boot.js';
import { restoreLaunch } from './restore.js';
import { resolveFrom, type NamedSnapshot } from './snapshot.js';
import { snapshotFiles } from './files.js';
import { pickWarm, warmDisk } from './warm-pick.js';
import { initScriptStep, keptOnFailure, verifyMountsStep } from './create-extras.js';
import type { ImageView, KernelView } from './deps.js';
import type { VmHandle } from './drivers/types.js';
import { checkMounts, seedMountsFile } from './host-folders.js';
import { limitsFor } from './limits.js';
import { generateName, newVmId } from './names.js';
import { resolvePackageSource } from './package-source.js';
import { planNet, type BootPlan } from './plan.js';
import { PortForwards } from './ports.js';
import { parseMountSpecs, parsePortSpecs } from './publish-spec.js';
import { view } from './queries.js';
import type { Stage } from './readiness.js';
import { buildSeedDisk, buildWorkDisk } from './seed.js';
import { refreshSshConfig } from './ssh-config.js';
import { ensureClientKey, pinHostKey, unpinHostKey } from './ssh.js';
import type { EgressMode, OnExpire, VmSpec } from './store.js';
import { egressSpec, hasHostAllows } from './egress.js';
import { lifetimeOf, type Lifetime } from './ttl.js';
import { testPause } from './testpause.js';
import type { OpContext, VmBase, VmView } from './vm-base.js';

export interface CreateParams {
  /** The image (optional with `from`, which says it). */
  image?: string;
  /** `--from NAME[@TAG]`: start from that VM's named snapshot (the newest when no TAG) instead of a boot. */
  from?: string;
  name?: string;
  kernel?: string;
  vcpu?: number;
  memoryMiB?: number;
  diskSize?: string;
  workDisk?: string;
  nat?: boolean;
  /** `--egress deny|nat|allow` (default: config vm.egress; none: no policy). */
  egress?: EgressMode;
  /** `--allow CIDR[:PORT[/PROTO]]` (network/allow-spec.ts). */
  allow?: string[];
  /** `--allow-vm NAME`. */
  allowVm?: string[];
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
  /**
   * A builder VM of prepare.ts (internal: not in the RPC contract): its root disk is a raw copy
   * of the image's base with this build's first-boot script, its seed says `prepare`.
   */
  builder?: boolean;
  /** A warm builder (warm.ts; internal: not in the RPC contract): guest RAM in this file. */
  warmBuilder?: { memoryFile: string };
  /** Boot cold even when a warm snapshot fits (`--cold`). */
  cold?: boolean;
  /** Lifetime in seconds (`--ttl`; default: config vm.ttl, none unless set). */
  ttl?: number;
  /** What the deadline does (default: config vm.onExpire). */
  onExpire?: OnExpire;
  /** Resource limits (limits.ts; defaults: config limits). */
  cpuQuota?: number;
  diskIops?: number;
  diskBps?: number;
}

/**
 * `vm create`: plan (every fact derived once) → record (row + lease, one write) → disk, seed
 * and network side by side → launch (vmm, boot, ssh, agent). Each step is named (StepRunner:
 * the step goes into `details.step` of any error), registers its undo the moment it acts, and
 * a failure unwinds newest first after every parallel step settled.
 */
export async function createVm(vb: VmBase, p: CreateParams, op: OpContext = {}): Promise<VmView> {
  const t0 = Date.now();
  const stage: Stage = (s, message, done) => op.progress?.({ stage: s, message, done, elapsedMs: Date.now() - t0 });
  const name = p.name ?? generateName((n) => !!vb.repo.find(n));
  return vb.locks
    .run(name, async (): Promise<VmView> => {
      if (vb.repo.find(name))
        throw new BangerError(ErrorCode.Exists, `vm '${name}' already exists`, { hint: `pick another --name or remove it: banger vm rm ${name}` });
      const undo = new UndoStack((m, f) => vb.ctx.log.warn(m, { vm: name, ...f }));
      const steps = new StepRunner({ undo, signal: op.signal, stage, log: (m, f) => vb.ctx.log.debug(m, { vm: name, ...f }) });
      // Input and lookups first, outside the steps: a bad argument is nobody's step and makes nothing.
      const plan = await planCreate(vb, name, p, op);
      const lifetime = lifetimeOf(vb.ctx.config.vm, p);
      const starting = p.start !== false;
      const initScript = p.initScript === undefined ? undefined : Buffer.from(p.initScript, 'base64');
      if (initScript && (!starting || p.wait === false))
        throw new BangerError(ErrorCode.Invalid, '--init-script needs the VM started and ready', {
          hint: 'drop --no-start / --no-wait',
          details: { field: '--init-script' },
        });
      try {
        // step ports: bound first, so a host port already taken fails before anything exists
        undo.push('ports', () => vb.forwards.close(name));
        await vb.forwards.open(name, plan.spec.ports ?? [], () => vb.repo.find(name)?.ip ?? undefined, plan.spec.portLimits);
        // step record: VM row (with its MAC) + IP lease in one transaction (UNIQUE ip: never two VMs, one IP)
        await steps.run('record', () => record(vb, plan, starting ? 'running' : 'stopped', undo, lifetime), { silent: true });
        await testPause(vb.ctx, 'record', op.signal);

        // Steps disk, seed and network touch different things, so they run side by side; each
        // registers its undo the moment it acts, and settleAll waits for all of them before a
        // failure unwinds. Only then does the VMM start.
        // A warm snapshot of this image and shape: restored instead of booted (restore.ts).
        if (plan.from && (!starting || p.wait === false))
          throw new BangerError(ErrorCode.Invalid, '--from starts the VM from its snapshot: drop --no-start / --no-wait', { details: { field: 'from' } });
        const warm =
          plan.from ?? (starting && p.wait !== false && !p.cold && !plan.spec.memoryFile && !plan.spec.prepare ? await pickWarm(vb, plan, stage) : undefined);
        await rm(plan.files.dir, { recursive: true, force: true }); // a stale dir no record owns
        await mkdir(plan.files.dir, { recursive: true, mode: 0o750 });
        undo.push('vm-dir', () => rm(plan.files.dir, { recursive: true, force: true }));
        await settleAll([
          warm
            ? steps.run('disk', () => warmDisk(vb, plan, warm, op.signal), { message: 'copy of the warm snapshot disk' })
            : steps.run('disk', () => disks(vb, plan, op.signal), {
                message: `${plan.spec.rootDisk.format === 'qcow2' ? 'qcow2 overlay' : 'copy'} of ${plan.image!.name}`,
              }),
          steps.run('seed', () => seed(vb, plan, undo), { message: 'host key + seed disk' }),
          starting ? networkUp(vb, plan, steps, true) : undefined,
        ]);
        throwIfAborted(op.signal);
        await testPause(vb.ctx, 'network', op.signal);

        if (warm) await restoreLaunch(vb, plan, warm, steps);
        else if (starting) await launch(vb, plan, { steps, wait: p.wait !== false, networkReady: true });
        const mounts = plan.spec.mounts ?? [];
        if (starting && p.wait !== false && mounts.length) await verifyMountsStep(vb, vb.get(name), mounts, { stage, signal: op.signal });
        if (initScript) await initScriptStep(vb, vb.get(name), initScript, { stage, signal: op.signal });
        if (!starting) {
          vb.repo.setState(name, { state: 'stopped', desiredState: 'stopped' });
          await vb.forwards.close(name); // published again by vm start
        }
        vb.repo.createDone(name);
        undo.commit();
        vb.deadlinesChanged();
        return view(vb, vb.get(name), true);
      } catch (e) {
        if (p.keepOnFailure && vb.repo.find(name)) {
          undo.commit();
          vb.repo.createDone(name);
          vb.deadlinesChanged();
          throw keptOnFailure(name, e);
        }
        const failures = await undo.unwind();
        if (failures.length) vb.ctx.log.error('create unwind incomplete', { vm: name, failures });
        throw e;
      }
    })
    .finally(() => {
      // Top the host key pool up once the answer is on its way, not while this create runs.
      setTimeout(() => void vb.hostKeys.refill(), 100).unref();
    });
}

/**
 * The plan of a create: image, kernel, VMM (KVM probed once) and spec; nothing is made yet,
 * except, once every argument checked out, the image's prepared disk when the image needs the
 * first-boot install and has none for the current inputs (stage `prepare`, prepare.ts): the VM
 * then stands on that disk instead of the image's base.
 */
async function planCreate(vb: VmBase, name: string, p0: CreateParams, op: OpContext): Promise<BootPlan> {
  // --from NAME[@TAG]: the snapshot says the image, kernel, VMM and shape (snapshot.ts).
  const from = p0.from === undefined ? undefined : await fromSnapshot(p0);
  const p = from ? from.params : p0;
  if (!p.image) throw new BangerError(ErrorCode.Invalid, 'vm create needs --image (or --from NAME[@TAG])', { details: { field: 'image' } });
  let image: ImageView = vb.deps.images.get(p.image);
  const kernelName = p.kernel ?? image.kernelRef ?? vb.deps.kernels.defaultName();
  const kernel: KernelView = vb.deps.kernels.get(kernelName);
  const choice = await vb.drivers.select(p.vmm ?? vb.ctx.config.vm.vmm, vb.host);
  const driver = vb.driver(choice.kind);
  driver.bootKernel(kernel); // E_NOT_FOUND now when the kernel has no file this VMM boots
  const diskSizeBytes = p.diskSize === undefined ? undefined : sizeArg('--disk-size', p.diskSize);
  const workDiskBytes = p.workDisk === undefined ? undefined : sizeArg('--work-disk', p.workDisk);
  const ports = parsePortSpecs(p.ports ?? []);
  PortForwards.checkConflicts(name, ports, vb.repo.list());
  const portLimits = PortForwards.limitsFor(p, ports, vb.ctx.config.ports);
  const mounts = await checkMounts(parseMountSpecs(p.mounts ?? []), driver);
  const memoryMiB = p.memoryMiB ?? vb.ctx.config.vm.memoryMiB;
  const limits = limitsFor(vb.ctx.config.limits, p, memoryMiB, await vb.cgroups());
  const builder = p.builder === true;
  if (builder && (ports.length || mounts.length)) throw new BangerError(ErrorCode.Internal, 'a builder VM has no ports or mounts');
  const baseDisk = from
    ? (from.snap.baseDisk ?? undefined)
    : builder
      ? undefined
      : await vb.preparer.baseFor({ image: image.name, kernel: kernelName, packageMirror: p.packageMirror, packageProxy: p.packageProxy, vmm: p.vmm }, op);
  if (baseDisk) image = { ...image, rootfsPath: baseDisk };
  const firstBoot = builder || image.fromRegistry || (await vb.firstBoot.has(image.rootfsPath));
  // A VM of a prepared disk installs nothing: the mirror was the prepare's (recorded with it).
  const pkg: { mirror?: string; proxy?: string } = baseDisk
    ? {}
    : resolvePackageSource(
        { mirror: p.packageMirror, proxy: p.packageProxy },
        { mirror: vb.ctx.config.firstBoot?.packageMirror, proxy: vb.ctx.config.firstBoot?.packageProxy },
      );
  // A builder VM (prepare.ts) always has NAT and no policy, whatever the config's default.
  const egress = builder ? { nat: true } : egressSpec(p, vb.ctx.config.vm.egress, (n) => !!vb.repo.find(n));
  const id = newVmId();
  const handle: VmHandle = { id, name, files: vb.files(name) };
  const spec: VmSpec = {
    vcpu: p.vcpu ?? vb.ctx.config.vm.vcpu,
    memoryMiB,
    diskSizeBytes,
    workDiskBytes,
    ...egress,
    firstBoot,
    ...(pkg.mirror ? { packageMirror: pkg.mirror } : {}),
    ...(pkg.proxy ? { packageProxy: pkg.proxy } : {}),
    rootDisk: builder ? { path: handle.files.rootRaw, format: 'raw' } : driver.rootDisk(handle),
    ...(baseDisk ? { baseDisk } : {}),
    ...(builder ? { prepare: true, nat: true } : {}),
    ...(ports.length ? { ports, portLimits } : {}),
    ...(mounts.length ? { mounts } : {}),
    ...(p.warmBuilder ? { memoryFile: p.warmBuilder.memoryFile } : {}),
    ...(limits ? { limits } : {}),
  };
  return { name, id, image, kernel, driver, choice, files: handle.files, handle, spec, ...(from ? { from: snapshotFiles(from.snap.dir) } : {}) };

  /** The create's params from the snapshot `p0.from` names; what the caller gave must agree with it. */
  async function fromSnapshot(q: CreateParams): Promise<{ snap: NamedSnapshot; params: CreateParams }> {
    const snap = await resolveFrom(vb, q.from!);
    const differs = (field: string, asked: unknown, has: unknown) =>
      new BangerError(ErrorCode.Conflict, `snapshot ${snap.vm}@${snap.tag} has ${field} ${has}; asked for ${asked}`, {
        hint: `leave ${field} out: a VM made from a snapshot has the snapshot's shape`,
        details: { field },
      });
    if (q.vcpu !== undefined && q.vcpu !== snap.vcpu) throw differs('vcpu', q.vcpu, snap.vcpu);
    if (q.memoryMiB !== undefined && q.memoryMiB !== snap.memoryMiB) throw differs('memoryMiB', q.memoryMiB, snap.memoryMiB);
    if (q.kernel !== undefined && q.kernel !== snap.kernel) throw differs('kernel', q.kernel, snap.kernel);
    if (q.image !== undefined && q.image !== snap.image) throw differs('image', q.image, snap.image);
    if (q.mounts?.length || q.diskSize || q.workDisk)
      throw new BangerError(ErrorCode.Invalid, 'a VM made from a snapshot has its disks: no --mount, --disk-size or --work-disk', {
        details: { field: 'from' },
      });
    return { snap, params: { ...q, image: snap.image, kernel: snap.kernel, vcpu: snap.vcpu, memoryMiB: snap.memoryMiB, vmm: snap.vmm as VmmChoiceName } };
  }
}

/** step record: the row, written once with its MAC, and the lease, in one transaction. */
function record(vb: VmBase, plan: BootPlan, desiredState: 'running' | 'stopped', undo: UndoStack, lifetime?: Lifetime): void {
  // The deadline counts from the record: a slow boot is part of the VM's lifetime.
  const expiry = lifetime ? { expiresAt: new Date(Date.now() + lifetime.seconds * 1000).toISOString(), onExpire: lifetime.onExpire } : {};
  vb.ctx.db.transaction(() => {
    vb.net.leaseInTx(plan.name, (ip) => {
      plan.net = vb.net.describe(plan.id, ip);
      // Hostname allows: the guest resolves through banger's forwarder on the gateway (network-policy.md).
      if (hasHostAllows(plan.spec)) plan.net.dns = [plan.net.gateway];
      vb.repo.insert({
        name: plan.name,
        id: plan.id,
        image: plan.image!.name,
        kernel: plan.kernel.name,
        spec: plan.spec,
        desiredState,
        state: 'created',
        vmm: plan.choice.kind,
        vmmReason: plan.choice.reason,
        tap: plan.net.tap,
        mac: plan.net.mac,
        createdAt: new Date().toISOString(),
        ...expiry,
      });
    });
  })();
  undo.push('record', () => vb.deleteRow(plan.name));
}

/** step disk: the driver's root disk (its DiskSpec is what gets launched) and the work disk. */
async function disks(vb: VmBase, plan: BootPlan, signal?: AbortSignal): Promise<void> {
  if (plan.spec.prepare) {
    // A builder's disk: written by the builder and kept as the prepared disk (prepare.ts).
    await vb.preparer.builderDisk(plan.image!.rootfsPath, plan.files.rootRaw, signal);
    plan.rootDisk = { id: 'root', path: plan.files.rootRaw, format: 'raw' };
    return;
  }
  const [root] = await settleAll([
    plan.driver.prepareRootDisk({
      vm: plan.handle,
      baseRootfs: plan.image!.rootfsPath,
      cacheDir: vb.ctx.layout.imageCacheDir(plan.image!.name),
      sizeBytes: plan.spec.diskSizeBytes,
      signal,
    }),
    plan.spec.workDiskBytes !== undefined ? buildWorkDisk(vb.ctx.exec, plan.files.work, plan.spec.workDiskBytes) : undefined,
  ]);
  plan.rootDisk = root;
}

/** step seed: host key made before first boot, pinned; seed disk for the first-boot script. */
async function seed(vb: VmBase, plan: BootPlan, undo: UndoStack): Promise<void> {
  const net = planNet(plan);
  const gid = vb.gid ?? (await bangerGid());
  const [clientPub, hostKey] = await settleAll([ensureClientKey(vb.ctx.exec, vb.ssh, gid), vb.hostKeys.takePair(plan.files.hostKey, plan.name)]);
  plan.hostKey = hostKey;
  await buildSeedDisk(vb.ctx.exec, plan.files.seed, vb.ctx.layout.tmp, {
    name: plan.name,
    net,
    hostKey: hostKey.priv,
    hostKeyPub: hostKey.pub,
    authorizedKey: clientPub,
    growRoot: plan.spec.diskSizeBytes !== undefined,
    packageMirror: plan.spec.packageMirror,
    packageProxy: plan.spec.packageProxy,
    mounts: seedMountsFile(plan.spec.mounts ?? []),
    prepare: plan.spec.prepare,
  });
  undo.push('known_hosts', () => unpinHostKey(vb.ssh, net.ip, plan.name));
  await pinHostKey(vb.ssh, net.ip, plan.name, hostKey.pub);
  undo.push('ssh-config', async () => void (await refreshSshConfig(vb, plan.name)));
  await refreshSshConfig(vb);
}
