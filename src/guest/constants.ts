/**
 * Guest-side names shared by the image injector (inject.ts) and the kernel command line
 * (vms/cmdline.ts): defined once here.
 */

/** banger's first-boot script inside the guest; the kernel runs it as PID 1 (`init=`). */
export const FIRST_BOOT_PATH = '/usr/local/libexec/banger-first-boot';

/**
 * Units masked on the kernel command line (`systemd.mask=`) as well as in the image: they must
 * be masked even in an image banger did not inject (or before the injection's links are seen),
 * or systemd waits 90 s for devices a microVM without udev never announces.
 */
export const BOOT_MASKED_UNITS = ['dev-ttyS0.device', 'dev-vdb.device', 'serial-getty@ttyS0.service'] as const;

/**
 * Units masked in every banger guest: each waits for something a microVM without udev never
 * delivers (device units, udev settle, network "online" waits; ip= configured the network
 * before init), or would block boot on the console (serial getty, interactive firstboot).
 */
export const MASKED_UNITS = [
  ...BOOT_MASKED_UNITS,
  'systemd-udev-settle.service',
  'systemd-networkd-wait-online.service',
  'NetworkManager-wait-online.service',
  'ifupdown-pre.service',
  'systemd-firstboot.service',
] as const;
