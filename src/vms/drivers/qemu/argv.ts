import type { LaunchSpec } from '../types.js';
import { qemuMountArgs } from './mounts.js';
import { qopt } from './qopt.js';

export { qopt } from './qopt.js';

/** A launch as QEMU runs it: the common spec plus QEMU's own choices. */
export interface QemuLaunch extends LaunchSpec {
  /**
   * Describe devices through ACPI (microvm acpi=on) instead of `virtio_mmio.device=` on the
   * command line. Needed by modular kernels (Debian's) whose initramfs insmods virtio_mmio.
   */
  acpi: boolean;
  /**
   * Where guest RAM lives: always an `-object memory-backend-*,id=mem` named on `-M` so every
   * VM's RAM block is `mem` and any state can be restored into any launch of the same shape.
   * `ram` anonymous; `file` a file (`share` on: a warm builder writes through to it; off: a
   * restore maps a saved template privately, copy on write); `memfd` shared (virtiofs).
   */
  memory: { kind: 'ram' } | { kind: 'memfd' } | { kind: 'file'; path: string; share: boolean };
  /** Start waiting for an incoming migration (`-incoming defer`; restore). */
  incoming?: boolean;
}

/**
 * QEMU's choices for a spec: ACPI on for a kernel with an initramfs. Such a kernel is modular
 * (Debian's) and its initramfs insmods virtio_mmio, which never sees `virtio_mmio.device=` on
 * the command line, so the devices are announced by ACPI instead.
 */
export function qemuLaunch(spec: LaunchSpec): QemuLaunch {
  const memory: QemuLaunch['memory'] = spec.mounts?.some((m) => m.kind === 'virtiofs')
    ? { kind: 'memfd' }
    : spec.memoryFile
      ? { kind: 'file', path: spec.memoryFile, share: true }
      : { kind: 'ram' };
  return { ...spec, acpi: !!spec.initrd, memory };
}

/** The `-object` value of the guest RAM backend (`id=mem`). */
export function memoryBackend(s: Pick<QemuLaunch, 'memory' | 'memoryMiB'>): string {
  const size = `size=${s.memoryMiB}M`;
  const m = s.memory;
  if (m.kind === 'memfd') return `memory-backend-memfd,id=mem,${size},share=on`;
  if (m.kind === 'file') return `memory-backend-file,id=mem,${size},mem-path=${qopt(m.path)},share=${m.share ? 'on' : 'off'}`;
  return `memory-backend-ram,id=mem,${size}`;
}

/** The `-name` value: the owning instance and VM, which `ownerOf` parses back. */
export function qemuName(instance: string, vm: string): string {
  return `banger:${instance}:${vm},process=banger-${vm}`;
}

/** The instance and VM of a process whose argv carries `-name banger:<instance>:<vm>[,…]`. */
export function qemuOwner(argv: string[]): { instance: string; vm: string } | undefined {
  const i = argv.indexOf('-name');
  const m = i >= 0 ? /^banger:([^:,]+):([^,]+)/.exec(argv[i + 1] ?? '') : null;
  return m ? { instance: m[1]!, vm: m[2]! } : undefined;
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
export function qemuArgv(binary: string, s: QemuLaunch): string[] {
  const f = s.files;
  const argv = [
    binary,
    // The guest name carries the owning instance (owner.ts); the process title stays short.
    '-name',
    qemuName(s.instance, s.name),
    '-M',
    `microvm,acpi=${s.acpi ? 'on' : 'off'},x-option-roms=off,rtc=on,memory-backend=mem`,
    '-accel',
    s.kvm ? 'kvm' : 'tcg',
    // TCG: QEMU's default CPU model (-cpu max hangs TSC calibration of Debian's kernel).
    ...(s.kvm ? ['-cpu', 'host'] : []),
    '-smp',
    String(s.vcpu),
    '-m',
    `${s.memoryMiB}M`,
    '-object',
    memoryBackend(s),
    '-no-reboot',
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-daemonize',
    '-kernel',
    s.kernel,
  ];
  if (s.initrd) argv.push('-initrd', s.initrd);
  argv.push('-append', s.cmdline);
  // The console file is opened O_APPEND (append=on): the daemon truncates it in place when it
  // passes its cap (console-log.ts), and `-serial file:` would also truncate it on a restore.
  argv.push('-chardev', `file,id=con,path=${qopt(f.console)},append=on`, '-serial', 'chardev:con');
  for (const d of s.disks) {
    argv.push('-drive', `id=${d.id},file=${qopt(d.path)},format=${d.format},if=none,${d.readOnly ? 'readonly=on' : 'discard=unmap'}${throttle(s.diskLimits)}`);
    argv.push('-device', `virtio-blk-device,drive=${d.id}`);
  }
  argv.push(...qemuMountArgs(s.mounts ?? [], f.dir));
  argv.push('-netdev', `tap,id=n0,ifname=${s.net.tap},script=no,downscript=no`);
  argv.push('-device', `virtio-net-device,netdev=n0,mac=${s.net.mac}`);
  argv.push('-object', 'rng-random,id=rng0,filename=/dev/urandom', '-device', 'virtio-rng-device,rng=rng0');
  argv.push('-device', 'virtio-serial-device');
  argv.push('-chardev', `socket,id=agent,path=${qopt(f.agent)},server=on,wait=off`);
  argv.push('-device', 'virtserialport,chardev=agent,name=banger.agent');
  argv.push('-qmp', `unix:${qopt(f.qmp)},server=on,wait=off`);
  argv.push('-pidfile', f.pid);
  if (s.incoming) argv.push('-incoming', 'defer');
  return argv;
}

/** `-drive` throttling options for `--disk-iops` / `--disk-bps` (QEMU's block throttling, per drive). */
function throttle(l: QemuLaunch['diskLimits']): string {
  return `${l?.iops ? `,throttling.iops-total=${l.iops}` : ''}${l?.bps ? `,throttling.bps-total=${l.bps}` : ''}`;
}
