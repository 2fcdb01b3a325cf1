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
RuntimeDirectory=banger
RuntimeDirectoryMode=0750
RuntimeDirectoryPreserve=yes
# No StateDirectory=: /var/lib/banger is root:banger 0750 (made by the .deb's postinst, else by
# bangerd); StateDirectory= would have systemd manage its owner and mode instead.
Environment=NODE_ENV=production

[Install]
WantedBy=multi-user.target
`;
}

export async function systemInstall(opts: InstallOptions): Promise<{ unitPath: string; group: { name: string; gid: number; created: boolean }; activated: boolean }> {
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
  const used = new Set(before.text.split('\n').map((l) => Number(l.split(':')[2])).filter((n) => !Number.isNaN(n)));
  let gid = 999;
  while (used.has(gid)) gid--;
  await mkdir(dirname(groupFile), { recursive: true });
  await writeFile(groupFile, before.text + (before.text && !before.text.endsWith('\n') ? '\n' : '') + `banger:x:${gid}:\n`);
  return { name: 'banger', gid, created: true };
}
