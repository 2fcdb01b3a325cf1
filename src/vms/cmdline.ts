/**
 * The guest kernel command line (contract with the kernel's initramfs and the first-boot
 * script). `ip=` is applied by banger's initramfs (Debian kernels lack CONFIG_IP_PNP);
 * `init=` only for images that carry the first-boot script.
 */
import { BOOT_MASKED_UNITS, FIRST_BOOT_PATH, LEAN_MASKED_UNITS } from '../guest/constants.js';

/** The first-boot script's path (guest/constants.ts). */
export const FIRST_BOOT = FIRST_BOOT_PATH;

export function kernelCmdline(o: {
  ip: string;
  gateway: string;
  netmask: string;
  hostname: string;
  firstBoot: boolean;
  tscKhz?: number;
  /** the kernel's modules disk, mounted by the first-boot script */
  modulesDevice?: string;
  /** mask LEAN_MASKED_UNITS too (config vm.leanBoot) */
  lean?: boolean;
}): string {
  const parts = ['console=ttyS0', 'reboot=t', 'panic=-1', 'root=/dev/vda', 'rw', `ip=${o.ip}::${o.gateway}:${o.netmask}:${o.hostname}:eth0:off`];
  if (o.firstBoot) parts.push(`init=${FIRST_BOOT}`);
  if (o.modulesDevice) parts.push(`banger.modules=${o.modulesDevice}`);
  // Under TCG the PIT-based TSC calibration fails on a loaded host and early boot then stalls;
  // giving the frequency skips that calibration. `tsc=reliable`: QEMU's TCG CPU model has no
  // constant_tsc, so with more than one vCPU the kernel marks the TSC unstable at boot and
  // falls back to refined-jiffies, which loses ticks under emulation (the guest clock fell
  // 3 s behind the host by the end of create and 28 s after two more minutes). The TCG TSC is
  // the host's own, so it is in fact synchronised and steady: keep it as the clocksource.
  if (o.tscKhz) parts.push(`tsc_early_khz=${o.tscKhz}`, 'tsc=reliable');
  parts.push(...BOOT_MASKED_UNITS.map((u) => `systemd.mask=${u}`));
  if (o.lean) parts.push(...LEAN_MASKED_UNITS.map((u) => `systemd.mask=${u}`));
  return parts.join(' ');
}

/** The host's TSC frequency in kHz from /proc/cpuinfo ("cpu MHz"), or 2 GHz when unknown. */
export function tscKhzFromCpuinfo(cpuinfo: string | undefined): number {
  const m = /^cpu MHz\s*:\s*([\d.]+)/m.exec(cpuinfo ?? '');
  const khz = m ? Math.round(parseFloat(m[1]!) * 1000) : 0;
  return khz > 100000 ? khz : 2000000;
}
