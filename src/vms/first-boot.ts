import { stat } from 'node:fs/promises';
import { toolEnv, type Exec } from '../core/exec.js';
import { FIRST_BOOT } from './cmdline.js';

/**
 * Does an image's rootfs carry banger's first-boot script? Answered with `debugfs` once per
 * image build: the answer is cached by (path, inode, mtime, size).
 */
export class FirstBootProbe {
  private readonly cache = new Map<string, boolean>();

  constructor(private readonly exec: Exec) {}

  async has(rootfs: string): Promise<boolean> {
    const st = await stat(rootfs).catch(() => undefined);
    if (!st) return false;
    const key = `${rootfs}:${st.ino}:${st.mtimeMs}:${st.size}`;
    const known = this.cache.get(key);
    if (known !== undefined) return known;
    const r = await this.exec(['debugfs', '-R', `stat ${FIRST_BOOT}`, rootfs], { env: toolEnv(), allowFailure: true });
    const has = r.exitCode === 0 && !/not found|File not found/i.test(r.stderr) && /Inode:/.test(r.stdout);
    this.cache.set(key, has);
    return has;
  }
}
