import { createVm, type CreateParams } from './create.js';
import { pruneVms, rmVms } from './delete.js';
import type { SshInfo, VmLogs } from '../core/shapes/vm.js';
import type { VmFiles } from './files.js';
import type { VmCgroupUsage } from '../core/shapes/vm.js';
import { list, logs, observe, ports, show, sshInfo, view } from './queries.js';
import { applyPolicy, hasPolicy, pairsOf } from './egress.js';
import { updateVm, type UpdateParams } from './update.js';
import { pauseVms, resumeIfPaused, resumeVms } from './pause.js';
import { reconcileVms } from './reconcile.js';
import { forkVm, listSnapshots, removeSnapshot, snapshotVm, type NamedSnapshot } from './snapshot.js';
import { pruneWarm, removeWarm, warmImage, type WarmParams } from './warm.js';
import { listWarm, type WarmSnapshot } from './warm-find.js';
import { PortForwards } from './ports.js';
import { refreshSshConfig } from './ssh-config.js';
import { startVms } from './start.js';
import { killVms, stopVms } from './stop.js';
import type { BuilderParams } from './prepare.js';
import type { VmRecord } from './store.js';
import { markStopped } from './teardown.js';
import { ExpiryReaper, expireVm, extendVm } from './ttl.js';
import type { OnExpire } from './store.js';
import { VmBase, type OpContext, type VmView } from './vm-base.js';

export { MAX_DISK_BYTES } from './args.js';
export type { CreateParams } from './create.js';
export type { OpContext, VmView } from './vm-base.js';

/**
 * VMs: lifecycle, disks, SSH, reconcile. A facade: each verb lives in its own file, a
 * function of the shared state (`VmBase`, vm-base.ts):
 *
 * | verb | file |
 * | --- | --- |
 * | create | create.ts (plan, record, disk, seed; boot.ts launches) |
 * | prepare (an image, once: a builder VM) | prepare.ts |
 * | start / restart | start.ts (+ boot.ts: network, vmm, ready) |
 * | stop / kill | stop.ts (teardown.ts: what only a running VM has) |
 * | pause / resume | pause.ts (the driver's snapshots; state in files.paused) |
 * | rm / prune | delete.ts |
 * | list / show / logs / sshInfo / ports / observe | queries.ts |
 * | ssh-config | ssh-config.ts |
 * | reconcile | reconcile.ts |
 * | extend / lifetimes (reaper) | ttl.ts |
 * | update (egress policy) | update.ts, egress.ts |
 *
 * Create is a named, ordered list of steps (record+lease, disk, seed, network, vmm, boot,
 * ssh); each registers its undo the moment it happens and a failure unwinds newest first,
 * leaving no tap, rule, lease, process or file behind. Operations on one VM are serialised.
 */
export class VmService extends VmBase {
  create(p: CreateParams, op: OpContext = {}): Promise<VmView> {
    return createVm(this, p, op);
  }

  override createBuilder(p: BuilderParams, op: OpContext): Promise<VmRecord> {
    return createVm(this, p, op);
  }

  override async removeBuilder(name: string): Promise<void> {
    if (!this.repo.find(name)) return; // its own create unwound it already
    await rmVms(this, [name], true);
  }

  /** A paused VM is resumed (its saved state), any other stopped one boots. */
  async start(names: string[], op: OpContext = {}, o: { wait?: boolean } = {}): Promise<VmView[]> {
    const paused = names.filter((n) => this.get(n).state === 'paused');
    if (paused.length) await resumeVms(this, paused, op);
    return startVms(this, names, op, o);
  }

  /** `image warm`: boot the image once with a shape and keep its snapshot (warm.ts). */
  warm(p: WarmParams, op: OpContext = {}): Promise<WarmSnapshot> {
    return warmImage(this, p, op);
  }

  /** An image's warm snapshots (`image show`). */
  warmOf(image: string): Promise<WarmSnapshot[]> {
    return listWarm(this.ctx.layout, image);
  }

  /** Remove an image's warm snapshots (`image rm`). */
  removeWarm(image: string): Promise<{ removed: string[] }> {
    return removeWarm(this, image);
  }

  /** `system prune`: warm snapshots of images that are gone or whose prepared disk is gone. */
  pruneWarm(): Promise<{ removed: string[]; freedBytes: number }> {
    return pruneWarm(this);
  }

  /** `vm snapshot NAME [TAG]` (snapshot.ts): the VM runs on. */
  snapshot(name: string, tag?: string, op: OpContext = {}): Promise<NamedSnapshot> {
    return snapshotVm(this, name, tag, op);
  }

  snapshots(name: string): Promise<NamedSnapshot[]> {
    return listSnapshots(this, name);
  }

  snapshotRm(name: string, tag: string): Promise<{ removed: string[] }> {
    return removeSnapshot(this, name, tag);
  }

  /** `vm fork NAME NEW [--count N]` (snapshot.ts): NAME runs on; N VMs start from its state. */
  fork(name: string, newName: string, count = 1, op: OpContext = {}): Promise<VmView[]> {
    return forkVm(this, name, newName, count, (p) => this.create(p, op), op);
  }

  /** Save each VM's state to disk and stop its VMM (pause.ts). */
  pause(names: string[], op: OpContext = {}): Promise<VmView[]> {
    return pauseVms(this, names, op);
  }

  /** Restore paused VMs from their saved state (pause.ts). */
  resume(names: string[], op: OpContext = {}): Promise<VmView[]> {
    return resumeVms(this, names, op);
  }

  /** Resume `name` first when it is paused (exec, ssh, cp); the milliseconds it took, or undefined. */
  resumeIfPaused(name: string, op: OpContext = {}): Promise<number | undefined> {
    return resumeIfPaused(this, name, op);
  }

  stop(names: string[], op: OpContext = {}): Promise<Array<VmView & { forced: boolean }>> {
    return stopVms(this, names, op);
  }

  async restart(names: string[], op: OpContext = {}): Promise<VmView[]> {
    await this.stop(names, op);
    return this.start(names, op);
  }

  /** Send a signal to the VMM. SIGKILL/SIGTERM also tear the VM's network down. */
  kill(names: string[], signal: NodeJS.Signals = 'SIGKILL'): Promise<VmView[]> {
    return killVms(this, names, signal);
  }

  /** Record the VM as stopped and remove its runtime network (tap, NAT). */
  markStopped(vm: VmRecord): Promise<void> {
    return markStopped(this, vm);
  }

  /** Remove VMs (a running one is stopped first; `force` kills it instead). */
  rm(names: string[], force = false, op: OpContext = {}): Promise<{ removed: string[] }> {
    return rmVms(this, names, force, op);
  }

  /** Remove every VM that is not running. */
  prune(op: OpContext = {}): Promise<{ removed: string[] }> {
    return pruneVms(this, op);
  }

  /** Check the host for a VM marked running; a dead one is marked stopped (and its network removed). */
  observe(vm: VmRecord): Promise<{ running: boolean; pid?: number }> {
    return observe(this, vm);
  }

  /** The record plus what the host shows; `current`: `vm` was just read (no second read). */
  view(vm: VmRecord, current = false): Promise<VmView> {
    return view(this, vm, current);
  }

  list(): Promise<VmView[]> {
    return list(this);
  }

  show(name: string): Promise<VmView & { files: VmFiles; cmdlineFirstBoot: string | null; rootDiskMethod?: string; cgroup?: VmCgroupUsage }> {
    return show(this, name);
  }

  logs(name: string, offset = 0): Promise<VmLogs> {
    return logs(this, name, offset);
  }

  /** What the CLI needs to run OpenSSH itself (stdio inherited, remote exit code). */
  async sshInfo(name: string): Promise<SshInfo> {
    return sshInfo(this, name, await this.resumeIfPaused(name));
  }

  ports(name: string): Promise<{ name: string; ports: unknown[]; agent: boolean }> {
    return ports(this, name);
  }

  /** `vm update`: change the VM's egress policy (a running VM's rules in one nft transaction). */
  update(p: UpdateParams): Promise<VmView> {
    return updateVm(this, p);
  }

  /** `vm extend`: push the VM's deadline out by `seconds`. */
  extend(name: string, seconds: number, onExpire?: OnExpire): Promise<VmView> {
    return extendVm(this, name, seconds, onExpire);
  }

  private reaper: ExpiryReaper | undefined;

  /** Start expiring VMs whose lifetime ended (daemon start, after reconcile: past deadlines go at once). */
  startReaper(): void {
    this.reaper ??= new ExpiryReaper({ list: () => this.repo.list(), expire: (name) => expireVm(this, name), log: this.ctx.log.child({ step: 'ttl' }) });
    this.deadlinesChanged = () => this.reaper?.poke();
    this.reaper.start();
  }

  /** Stop the reaper (daemon stop); waits for an expiry in progress. */
  async stopReaper(): Promise<void> {
    this.deadlinesChanged = () => {};
    await this.reaper?.stop();
  }

  /** Rewrite layout.ssh/config (`Host NAME.vm`) from the VM table. */
  refreshSshConfig(exclude?: string): Promise<{ path: string; content: string }> {
    return refreshSshConfig(this, exclude);
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
      cgroups: () => this.cgroups(),
      removePolicy: (vmId) => this.net.removePolicy(vmId, pairsOf(this)),
      adopted: async (vm) => {
        if (hasPolicy(vm.spec)) await applyPolicy(this, vm);
        await this.forwards.open(vm.name, PortForwards.of(vm), () => this.repo.find(vm.name)?.ip ?? undefined, vm.spec.portLimits);
      },
    });
    void this.hostKeys.refill();
  }
}
