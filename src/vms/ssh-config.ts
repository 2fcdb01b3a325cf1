import { mkdir } from 'node:fs/promises';
import { writeSshConfig } from './ssh.js';
import type { VmBase } from './vm-base.js';

/** Rewrite layout.ssh/config (`Host NAME.vm`) from the VM table. */
export async function refreshSshConfig(vb: VmBase, exclude?: string): Promise<{ path: string; content: string }> {
  const vms = vb.repo
    .list()
    .filter((v) => v.ip && v.name !== exclude)
    .map((v) => ({ name: v.name, ip: v.ip! }));
  await mkdir(vb.ssh.dir, { recursive: true, mode: 0o750 });
  const content = await writeSshConfig(vb.ssh, vms);
  return { path: vb.ssh.config, content };
}
