/**
 * The guest kernel command line (contract with the kernel's initramfs and the first-boot
 * script). `ip=` is applied by banger's initramfs (Debian kernels lack CONFIG_IP_PNP);
 * `init=` only for images that carry the first-boot script.
 */
export const FIRST_BOOT = '/usr/local/libexec/banger-first-boot';

export function kernelCmdline(o: { ip: string; gateway: string; netmask: string; hostname: string; firstBoot: boolean }): string {
  const parts = [
    'console=ttyS0',
    'reboot=t',
    'panic=-1',
    'root=/dev/vda',
    'rw',
    `ip=${o.ip}::${o.gateway}:${o.netmask}:${o.hostname}:eth0:off`,
  ];
  if (o.firstBoot) parts.push(`init=${FIRST_BOOT}`);
  parts.push('systemd.mask=dev-ttyS0.device', 'systemd.mask=dev-vdb.device', 'systemd.mask=serial-getty@ttyS0.service');
  return parts.join(' ');
}
