import type { Socket } from 'node:net';
import { rm } from 'node:fs/promises';
import { BangerError, ErrorCode, errorMessage } from '../../../core/errors.js';
import type { Exec } from '../../../core/exec.js';
import { toolEnv } from '../../../core/exec.js';
import { enterArgv } from '../../../core/cgroup-group.js';
import { cmdline, pidAlive, readPidFile, waitExit } from '../../proc.js';
import { connectUnixStream } from '../unix-stream.js';
import type {
  BootKernel,
  DiskSpec,
  DriverFeatures,
  DriverHost,
  KernelFiles,
  LaunchSpec,
  ProbeResult,
  RootDiskRequest,
  SharedFolders,
  VmHandle,
  VmmDriver,
  VmmStatus,
  VmSnapshots,
} from '../types.js';
import { qemuArgv, qemuLaunch, qemuOwner, qopt } from './argv.js';
import { qcow2Overlay } from './disk.js';
import { qemuMountDevices, startVirtiofsd, stopVirtiofsd } from './mounts.js';
import { qmpCommand } from './qmp.js';
import { QemuSnapshots } from './snapshot.js';

/**
 * QEMU `microvm` (KVM when usable, else TCG). Boots the bzImage (`vmlinuz`) when the kernel has
 * one, else the PVH ELF `vmlinux`; root disk = qcow2 overlay over the image's raw base; serial
 * console to console.log; QMP on qmp.sock; the guest agent on a virtio-serial port bound to
 * agent.sock. Its processes carry `-name banger:<instance>:<vm>`.
 */
export class QemuDriver implements VmmDriver {
  readonly kind = 'qemu' as const;
  readonly features: DriverFeatures = { mounts: true, snapshots: true, vsock: false, ownCgroup: false };
  /** virtiofs (one virtiofsd per mount, started before QEMU) or virtio-9p: mounts.ts. */
  readonly folders: SharedFolders = {
    devices: (mounts) => qemuMountDevices(mounts),
    start: (vm, mounts, o) => startVirtiofsd(this.exec, vm.files.dir, mounts, { cgroup: o?.cgroup }),
    stop: (vm, mounts) => stopVirtiofsd(vm.files.dir, mounts),
  };

  /** Save/restore through QEMU's migration stream (snapshot.ts). */
  readonly snapshots: VmSnapshots;

  constructor(
    private readonly exec: Exec,
    private readonly opts: { qemu: string; qemuImg?: string },
  ) {
    this.snapshots = new QemuSnapshots(
      exec,
      opts.qemu,
      (argv, spec, signal) => this.launchArgv(argv, spec, signal),
      (vm) => this.kill(vm, 'SIGKILL'),
    );
  }

  async probe(host: DriverHost): Promise<ProbeResult> {
    const kvm = host.kvm.usable;
    if (!(await host.probe.which(this.opts.qemu))) {
      return {
        usable: false,
        kvm,
        reason: 'binary not found',
        error: `QEMU binary '${this.opts.qemu}' not found`,
        hint: 'apt-get install qemu-system-x86 qemu-utils',
      };
    }
    return { usable: true, kvm, reason: kvm ? 'accel kvm' : `accel tcg (KVM not usable: ${host.kvm.reason})` };
  }

  /** The bzImage when present (QEMU's fastest path), else the PVH `vmlinux`. */
  bootKernel(k: KernelFiles): BootKernel {
    if (k.vmlinuz) return { format: 'bzImage', path: k.vmlinuz };
    if (k.vmlinux) return { format: 'elf-vmlinux', path: k.vmlinux };
    throw new BangerError(ErrorCode.NotFound, `kernel '${k.name}' has neither vmlinuz nor vmlinux in ${k.dir}`, {
      hint: `pull it again: banger kernel pull ${k.name}`,
      details: { kernel: k.name },
    });
  }

  rootDisk(vm: VmHandle): Omit<DiskSpec, 'id'> {
    return { path: vm.files.rootQcow2, format: 'qcow2' };
  }

  async prepareRootDisk(r: RootDiskRequest): Promise<DiskSpec> {
    const disk: DiskSpec = { id: 'root', ...this.rootDisk(r.vm) };
    await qcow2Overlay(this.exec, this.opts.qemuImg ?? 'qemu-img', {
      baseRootfs: r.baseRootfs,
      cacheDir: r.cacheDir,
      target: disk.path,
      sizeBytes: r.sizeBytes,
      signal: r.signal,
    });
    return disk;
  }

  launch(spec: LaunchSpec, o: { signal?: AbortSignal } = {}): Promise<{ pid: number }> {
    return this.launchArgv(qemuArgv(this.opts.qemu, qemuLaunch(spec)), spec, o.signal);
  }

  /** Run a daemonizing QEMU argv for `spec` and read its pid (launch, and restore's `-incoming`). */
  private async launchArgv(argv: string[], spec: LaunchSpec, signal?: AbortSignal): Promise<{ pid: number }> {
    await rm(spec.files.pid, { force: true });
    try {
      // In its cgroup from the start: -daemonize's child inherits it (launch and restore alike).
      await this.exec(enterArgv(spec.cgroup?.procs ?? [], argv), { env: toolEnv(), signal, timeoutMs: 60000 });
    } catch (e) {
      throw new BangerError(ErrorCode.Vmm, `step vmm-start: QEMU did not start: ${errorMessage(e)}`, {
        hint: `check the kernel, disks and tap; console: ${spec.files.console}`,
        cause: e,
        details: { step: 'vmm-start' },
      });
    }
    const pid = await readPidFile(spec.files.pid);
    if (!pid || !pidAlive(pid))
      throw new BangerError(ErrorCode.Vmm, `step vmm-start: QEMU exited right after start`, {
        hint: `see ${spec.files.console}`,
        details: { step: 'vmm-start' },
      });
    return { pid };
  }

  async status(vm: VmHandle, pidHint?: number | null): Promise<VmmStatus> {
    const files = vm.files;
    const pid = (await readPidFile(files.pid)) ?? pidHint ?? undefined;
    if (!pid || !pidAlive(pid)) return { running: false };
    const argv = await cmdline(pid);
    // The process must be a QEMU whose QMP socket is this VM's (pids get reused).
    const ours = !!argv && argv.some((a) => a.includes(qopt(files.qmp)));
    return ours ? { running: true, pid } : { running: false };
  }

  /** Nothing to re-attach: QMP and the agent socket are opened per use. */
  adopt(vm: VmHandle, pidHint?: number | null): Promise<VmmStatus> {
    return this.status(vm, pidHint);
  }

  async stop(vm: VmHandle, o: { timeoutMs: number; guestShutdown?: () => Promise<void> }): Promise<{ forced: boolean }> {
    const st = await this.status(vm);
    if (!st.running || !st.pid) {
      await this.cleanupSockets(vm);
      return { forced: false };
    }
    // acpi=off: there is no ACPI power button, so system_powerdown is best effort; the guest is
    // asked to reboot (reboot=t + -no-reboot turns that into a clean QEMU exit).
    await qmpCommand(vm.files.qmp, 'system_powerdown').catch(() => undefined);
    if (o.guestShutdown) void o.guestShutdown().catch(() => undefined);
    const forced = !(await waitExit(st.pid, o.timeoutMs));
    if (forced) {
      await qmpCommand(vm.files.qmp, 'quit').catch(() => undefined);
      if (!(await waitExit(st.pid, 3000))) await this.kill(vm, 'SIGKILL');
    }
    await this.cleanupSockets(vm);
    return { forced };
  }

  async kill(vm: VmHandle, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const st = await this.status(vm);
    if (st.running && st.pid) {
      try {
        process.kill(st.pid, signal);
      } catch {
        /* gone */
      }
      if (signal === 'SIGKILL' || signal === 'SIGTERM') await waitExit(st.pid, 5000);
    }
    if (!(await this.status(vm)).running) await this.cleanupSockets(vm);
  }

  consolePath(vm: VmHandle): string {
    return vm.files.console;
  }

  ownerOf(argv: string[]): { instance: string; vm: string } | undefined {
    return qemuOwner(argv);
  }

  /** The virtio-serial port's host end: QEMU listens on agent.sock (one client at a time). */
  openAgentStream(vm: VmHandle, o: { signal?: AbortSignal; timeoutMs: number }): Promise<Socket> {
    return connectUnixStream(vm.files.agent, { ...o, what: `vm '${vm.name}' agent channel` });
  }

  private async cleanupSockets(vm: VmHandle): Promise<void> {
    for (const p of [vm.files.qmp, vm.files.agent, vm.files.pid]) await rm(p, { force: true });
  }
}
