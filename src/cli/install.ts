import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Exec } from '../core/exec.js';

/**
 * `banger system install`: a systemd unit for bangerd and the `banger` group. Everything is
 * written relative to `destRoot` ("/" for real, a temp dir in tests) so it is testable.
 */
export interface InstallOptions {
  destRoot: string;
  bangerdPath: string;
  nodePath: string;
  exec?: Exec;
  /** Run systemctl daemon-reload/enable --now (only when destRoot is "/"). */
  activate?: boolean;
}

/**
 * The systemd unit. The hardening fits a root daemon that makes taps, bridges and nftables
 * rules, writes /proc/sys (ip_forward), opens /dev/kvm, /dev/net/tun and loop devices, makes
 * mount and user namespaces for virtiofsd, and runs Firecracker's jailer (chroot, cgroups,
 * mknod, setuid to an unprivileged id). docs/security.md ("The systemd unit") says why each
 * option is in or out; test/e2e/package.test.ts runs the installed daemon under every
 * restriction below (UNIT_RESTRICTIONS) and fails on one it cannot apply.
 */
export function unitText(nodePath: string, bangerdPath: string): string {
  return `[Unit]
Description=banger daemon (microVM manager)
Documentation=https://github.com/banger/banger
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart=${nodePath} ${bangerdPath}
Restart=on-failure
RestartSec=2
# VMs are separate processes: do not kill them when the daemon restarts.
KillMode=process
# /run/banger: the socket. /run/virtiofsd: the mount point virtiofsd's socket directory is
# bound on (src/vms/drivers/qemu/mounts.ts), which ProtectSystem would not let bangerd create.
RuntimeDirectory=banger virtiofsd
RuntimeDirectoryMode=0750
RuntimeDirectoryPreserve=yes
# No StateDirectory=: /var/lib/banger is root:banger 0750 (made by the .deb's postinst, else by
# bangerd); StateDirectory= would have systemd manage its owner and mode instead.
Environment=NODE_ENV=production
# Hardening. The file system is read-only but for the state root, the runtime directories and
# the jailer's chroot base (created by an admin who uses it); homes are read-only (kernel
# import and image import read users' files as root). A state root moved by config, or a
# read-write --mount over 9p, needs a drop-in with ReadWritePaths=.
ProtectSystem=strict
ReadWritePaths=/var/lib/banger -/srv/jailer
ProtectHome=read-only
# Nothing bangerd runs gains privileges on exec: the jailer and banger-fsjail only drop them.
NoNewPrivileges=yes
# Published ports, agent channels and VMMs each hold descriptors.
LimitNOFILE=65536
# Counts the daemon and every VMM and virtiofsd it started (they stay in the unit's cgroup).
TasksMax=16384
# Not set, on purpose: PrivateTmp (imports read paths under /tmp), PrivateDevices (/dev/kvm,
# /dev/net/tun, loop), ProtectKernelTunables (ip_forward), ProtectControlGroups (the jailer's
# cgroups), ProtectKernelModules (hides /lib/modules, which kernel import --modules may name),
# RestrictSUIDSGID (images carry setuid files), ProtectClock (its device policy hides /dev/kvm).

[Install]
WantedBy=multi-user.target
`;
}

/**
 * The [Service] keys of unitText that restrict the daemon, and the ones that do not. The e2e
 * package test applies each restriction itself (systemd is not PID 1 on our CI machines) and
 * fails on a key in neither list, so an option added to the unit is an option tested.
 */
export const UNIT_RESTRICTIONS = ['RuntimeDirectory', 'ProtectSystem', 'ReadWritePaths', 'ProtectHome', 'NoNewPrivileges', 'LimitNOFILE', 'TasksMax'] as const;
export const UNIT_PLAIN_KEYS = [
  'Type',
  'ExecStart',
  'Restart',
  'RestartSec',
  'KillMode',
  'RuntimeDirectoryMode',
  'RuntimeDirectoryPreserve',
  'Environment',
] as const;

export async function systemInstall(
  opts: InstallOptions,
): Promise<{ unitPath: string; group: { name: string; gid: number; created: boolean }; activated: boolean }> {
  const unitPath = join(opts.destRoot, 'etc/systemd/system/bangerd.service');
  await mkdir(dirname(unitPath), { recursive: true });
  await writeFile(unitPath, unitText(opts.nodePath, opts.bangerdPath));
  await chmod(unitPath, 0o644);
  const group = await ensureGroup(join(opts.destRoot, 'etc/group'), opts.destRoot === '/' ? opts.exec : undefined);
  let activated = false;
  if (opts.activate && opts.destRoot === '/' && opts.exec) {
    await opts.exec(['systemctl', 'daemon-reload']);
    await opts.exec(['systemctl', 'enable', '--now', 'bangerd.service']);
    activated = true;
  }
  return { unitPath, group, activated };
}

/** Create the `banger` system group (groupadd on a real root, a line in etc/group otherwise). */
async function ensureGroup(groupFile: string, exec?: Exec): Promise<{ name: string; gid: number; created: boolean }> {
  const find = async () => {
    const text = await readFile(groupFile, 'utf8').catch(() => '');
    const line = text.split('\n').find((l) => l.startsWith('banger:'));
    return { text, gid: line ? Number(line.split(':')[2]) : undefined };
  };
  const before = await find();
  if (before.gid !== undefined) return { name: 'banger', gid: before.gid, created: false };
  if (exec) {
    await exec(['groupadd', '--system', 'banger']);
    const after = await find();
    return { name: 'banger', gid: after.gid ?? -1, created: true };
  }
  const used = new Set(
    before.text
      .split('\n')
      .map((l) => Number(l.split(':')[2]))
      .filter((n) => !Number.isNaN(n)),
  );
  let gid = 999;
  while (used.has(gid)) gid--;
  await mkdir(dirname(groupFile), { recursive: true });
  await writeFile(groupFile, before.text + (before.text && !before.text.endsWith('\n') ? '\n' : '') + `banger:x:${gid}:\n`);
  return { name: 'banger', gid, created: true };
}
