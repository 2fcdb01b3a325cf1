import { randomBytes } from 'node:crypto';
import { copyFile, rename, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { exists } from '../../core/fsutil.js';
import { BangerError, ErrorCode, errorMessage } from '../../core/errors.js';
import type { Exec } from '../../core/exec.js';
import { toolEnv } from '../../core/exec.js';
import type { VmFiles } from '../files.js';
import { cmdline, pidAlive, readPidFile, waitExit } from '../proc.js';
import { qmpCommand } from './qmp.js';
import { qemuMountArgs } from '../mounts.js';
import type { AgentChannel, DiskSpec, LaunchSpec, VmmDriver, VmmStatus } from './types.js';

/** QEMU option values escape ',' as ',,'. */
export function qopt(value: string): string {
  return value.replace(/,/g, ',,');
}

/**
 * The full qemu-system-x86_64 argv for a VM (pure; unit-tested).
 * `-M microvm,acpi=off` (virtio-mmio devices announced on the kernel command line; needs
 * CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES) or `acpi=on` for modular kernels whose virtio_mmio is
 * loaded by an initramfs (insmod does not see `virtio_mmio.device=`; ACPI announces them), `-daemonize`
 * so the VMM outlives bangerd (which is why `-display none` replaces `-nographic`: QEMU
 * refuses the two together), serial to console.log, QMP and the agent's virtio-serial port on
 * Unix sockets in the VM directory. Disks keep their order: vda root, vdb seed, vdc work.
 */
export function qemuArgv(binary: string, s: LaunchSpec): string[] {
  const f = s.files;
  const argv = [
    binary,
    // The guest name carries the owning instance (owner.ts); the process title stays short.
    '-name', `banger:${s.instance}:${s.name},process=banger-${s.name}`,
    '-M', `microvm,acpi=${s.acpi ? 'on' : 'off'},x-option-roms=off,rtc=on${s.mounts?.some((m) => m.kind === 'virtiofs') ? ',memory-backend=mem' : ''}`,
    '-accel', s.kvm ? 'kvm' : 'tcg',
    // TCG: QEMU's default CPU model (-cpu max hangs TSC calibration of Debian's kernel).
    ...(s.kvm ? ['-cpu', 'host'] : []),
    '-smp', String(s.vcpu),
    '-m', `${s.memoryMiB}M`,
    '-no-reboot', '-nodefaults', '-no-user-config', '-display', 'none', '-daemonize',
    '-kernel', s.kernel,
  ];
  if (s.initrd) argv.push('-initrd', s.initrd);
  argv.push('-append', s.cmdline);
  argv.push('-serial', `file:${f.console}`);
  for (const d of s.disks) {
    argv.push('-drive', `id=${d.id},file=${qopt(d.path)},format=${d.format},if=none,${d.readOnly ? 'readonly=on' : 'discard=unmap'}`);
    argv.push('-device', `virtio-blk-device,drive=${d.id}`);
  }
  argv.push(...qemuMountArgs(s.mounts ?? [], f.dir, s.memoryMiB));
  argv.push('-netdev', `tap,id=n0,ifname=${s.net.tap},script=no,downscript=no`);
  argv.push('-device', `virtio-net-device,netdev=n0,mac=${s.net.mac}`);
  argv.push('-object', 'rng-random,id=rng0,filename=/dev/urandom', '-device', 'virtio-rng-device,rng=rng0');
  argv.push('-device', 'virtio-serial-device');
  argv.push('-chardev', `socket,id=agent,path=${qopt(f.agent)},server=on,wait=off`);
  argv.push('-device', 'virtserialport,chardev=agent,name=banger.agent');
  argv.push('-qmp', `unix:${qopt(f.qmp)},server=on,wait=off`);
  argv.push('-pidfile', f.pid);
  return argv;
}

export class QemuDriver implements VmmDriver {
  readonly kind = 'qemu' as const;
  constructor(
    private readonly exec: Exec,
    private readonly opts: { qemu: string; qemuImg?: string },
  ) {}

  /**
   * qcow2 overlay backed by the raw base: O(1) in the image size; the base is never written.
   * An empty overlay depends only on the backing path, its format and the virtual size, so
   * the first VM of an image (and size) makes a template with qemu-img next to the image's
   * rootfs and every VM after that gets a copy of it (a ~200 KiB file, ~1 ms instead of a
   * ~50 ms qemu-img run). The template name carries the base's size, inode and mtime, so a
   * rebuilt image never reuses a stale one; it is removed with the image's directory.
   */
  async prepare(files: VmFiles, baseRootfs: string, o: { sizeBytes?: number; signal?: AbortSignal }): Promise<DiskSpec> {
    const base = await stat(baseRootfs).catch((e) => {
      throw new BangerError(ErrorCode.NotFound, `image rootfs ${baseRootfs} is missing`, { hint: 'pull the image again', cause: e });
    });
    if (o.sizeBytes !== undefined && o.sizeBytes < base.size) {
      throw new BangerError(ErrorCode.Invalid, `--disk-size ${o.sizeBytes} bytes is smaller than the image (${base.size} bytes)`, { hint: 'give a size at least as large as the image, e.g. --disk-size 8G' });
    }
    const virtualSize = o.sizeBytes ?? base.size;
    const template = join(dirname(baseRootfs), `.overlay-${virtualSize}-${base.ino}-${Math.floor(base.mtimeMs)}.qcow2`);
    if (!(await exists(template))) {
      const tmp = `${template}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
      try {
        await this.createOverlay(baseRootfs, tmp, virtualSize, o.signal);
        await rename(tmp, template);
      } catch {
        await rm(tmp, { force: true });
        // No template (e.g. the image directory is read-only): make this VM's overlay directly;
        // a real problem (a bad base, no qemu-img) fails here with qemu-img's own error.
        await this.createOverlay(baseRootfs, files.rootQcow2, virtualSize, o.signal);
        return { id: 'root', path: files.rootQcow2, format: 'qcow2' };
      }
    }
    await copyFile(template, files.rootQcow2);
    return { id: 'root', path: files.rootQcow2, format: 'qcow2' };
  }

  private async createOverlay(baseRootfs: string, target: string, virtualSize: number, signal?: AbortSignal): Promise<void> {
    await this.exec([this.opts.qemuImg ?? 'qemu-img', 'create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', baseRootfs, target, String(virtualSize)], { env: toolEnv(), signal });
  }

  async start(spec: LaunchSpec, o: { signal?: AbortSignal } = {}): Promise<{ pid: number }> {
    await rm(spec.files.pid, { force: true });
    try {
      await this.exec(qemuArgv(this.opts.qemu, spec), { env: toolEnv(), signal: o.signal, timeoutMs: 60000 });
    } catch (e) {
      throw new BangerError(ErrorCode.Vmm, `step vmm-start: QEMU did not start: ${errorMessage(e)}`, { hint: `check the kernel, disks and tap; console: ${spec.files.console}`, cause: e });
    }
    const pid = await readPidFile(spec.files.pid);
    if (!pid || !pidAlive(pid)) throw new BangerError(ErrorCode.Vmm, `step vmm-start: QEMU exited right after start`, { hint: `see ${spec.files.console}` });
    return { pid };
  }

  async status(files: VmFiles, pidHint?: number | null): Promise<VmmStatus> {
    const pid = (await readPidFile(files.pid)) ?? pidHint ?? undefined;
    if (!pid || !pidAlive(pid)) return { running: false };
    const argv = await cmdline(pid);
    // The process must be a QEMU whose QMP socket is this VM's (pids get reused).
    const ours = !!argv && argv.some((a) => a.includes(qopt(files.qmp)));
    return ours ? { running: true, pid } : { running: false };
  }

  async stop(files: VmFiles, o: { timeoutMs: number; guestShutdown?: () => Promise<void> }): Promise<void> {
    const st = await this.status(files);
    if (!st.running || !st.pid) return this.cleanupSockets(files);
    // acpi=off: there is no ACPI power button, so system_powerdown is best effort; the guest is
    // asked to reboot (reboot=t + -no-reboot turns that into a clean QEMU exit).
    await qmpCommand(files.qmp, 'system_powerdown').catch(() => undefined);
    if (o.guestShutdown) void o.guestShutdown().catch(() => undefined);
    if (!(await waitExit(st.pid, o.timeoutMs))) {
      await qmpCommand(files.qmp, 'quit').catch(() => undefined);
      if (!(await waitExit(st.pid, 3000))) await this.kill(files, 'SIGKILL');
    }
    await this.cleanupSockets(files);
  }

  async kill(files: VmFiles, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const st = await this.status(files);
    if (st.running && st.pid) {
      try {
        process.kill(st.pid, signal);
      } catch {
        /* gone */
      }
      if (signal === 'SIGKILL' || signal === 'SIGTERM') await waitExit(st.pid, 5000);
    }
    if (!(await this.status(files)).running) await this.cleanupSockets(files);
  }

  consolePath(files: VmFiles): string {
    return files.console;
  }

  agentChannel(files: VmFiles): AgentChannel {
    return { kind: 'unix-serial', path: files.agent };
  }

  private async cleanupSockets(files: VmFiles): Promise<void> {
    for (const p of [files.qmp, files.agent, files.pid]) await rm(p, { force: true });
  }
}
