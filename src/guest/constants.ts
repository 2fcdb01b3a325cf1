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

/**
 * Units masked on the kernel command line for a lean boot (config `vm.leanBoot`, default on):
 * each costs boot time under TCG (a process each, tens of milliseconds or more) and does nothing
 * a banger VM needs: API filesystems nobody mounts here (hugepages, mqueue, debugfs, tracefs,
 * configfs, the fuse control fs), module loads at boot (`modprobe@`; `kmod-static-nodes` is kept,
 * so /dev/fuse, /dev/net/tun and /dev/loop-control exist and load their module when opened),
 * sysctl.d and modules-load.d (Debian's /etc/modules; apply your own with the agent or
 * --init-script), the runlevel record in utmp, a remount of a root that is
 * already rw, a getty on a VT the microVM does not have, e2scrub of LVM snapshots, and the
 * "/usr changed" jobs a prepared or debootstrapped image already ran when its packages were
 * installed (ldconfig, sysusers, hwdb, journal catalog). Kept: journald, sshd, the agent, the
 * network as banger configures it (ip= before init), tmpfiles, the mounts of `--mount` (the
 * first-boot script mounts them). Measured with bench/prepare.ts (systemd-analyze blame).
 */
export const LEAN_MASKED_UNITS = [
  'dev-hugepages.mount',
  'dev-mqueue.mount',
  'sys-kernel-debug.mount',
  'sys-kernel-tracing.mount',
  'sys-kernel-config.mount',
  'sys-fs-fuse-connections.mount',
  'modprobe@configfs.service',
  'modprobe@dm_mod.service',
  'modprobe@drm.service',
  'modprobe@efi_pstore.service',
  'modprobe@fuse.service',
  'modprobe@loop.service',
  'systemd-sysctl.service',
  'systemd-modules-load.service',
  'systemd-remount-fs.service',
  'systemd-update-utmp-runlevel.service',
  'getty-static.service',
  'getty@tty1.service',
  'e2scrub_reap.service',
  'ldconfig.service',
  'systemd-sysusers.service',
  'systemd-hwdb-update.service',
  'systemd-journal-catalog-update.service',
  'systemd-update-done.service',
] as const;
