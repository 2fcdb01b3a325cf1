import { writeFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Exec } from '../core/exec.js';
import { toolEnv } from '../core/exec.js';

/**
 * Restores extended attributes on many paths with ONE `setfattr -h --restore` run (a process
 * per file would dominate the build time of images that label every file).
 *
 * Contract: `paths` are relative to `root` and the caller has verified that no component
 * but the last is a symlink and that nothing else writes the tree meanwhile; `-h` makes
 * setfattr act on the last component itself (a symlink is never followed). The dump file is
 * written beside `root` (inside the private staging dir) and always removed.
 */
export async function restoreXattrs(root: string, entries: [string, Map<string, Buffer>][], opts: { exec: Exec; signal?: AbortSignal }): Promise<void> {
  if (!entries.length) return;
  const lines: string[] = [];
  for (const [rel, attrs] of entries) {
    lines.push(`# file: ${escapePath(rel || '.')}`);
    for (const [k, v] of attrs) lines.push(`${escapePath(k)}=0s${v.toString('base64')}`);
    lines.push('');
  }
  const dump = join(root, '..', `.xattrs-${process.pid}-${Date.now()}.txt`);
  await writeFile(dump, lines.join('\n') + '\n', { mode: 0o600 });
  try {
    await opts.exec(['setfattr', '-h', `--restore=${dump}`], { cwd: root, env: toolEnv(), signal: opts.signal });
  } finally {
    await rm(dump, { force: true });
  }
}

/** getfattr-style escaping: control characters, backslash, '=' and non-ASCII as \ooo. */
export function escapePath(p: string): string {
  let out = '';
  for (const b of Buffer.from(p, 'utf8')) {
    out += b < 0x21 || b >= 0x7f || b === 0x5c || b === 0x3d ? '\\' + b.toString(8).padStart(3, '0') : String.fromCharCode(b);
  }
  return out;
}
