import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Read-only inspection of an ext4 image with debugfs (no mount). */
export interface Ext4Stat {
  inode: number;
  type: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  links: number;
  mtime: number;
  linkTarget?: string;
  device?: [number, number];
}

function debugfs(img: string, cmd: string): { out: string; err: string } {
  const r = spawnSync('debugfs', ['-R', cmd, img], { encoding: 'utf8', env: { ...process.env, LC_ALL: 'C' } });
  return { out: r.stdout, err: r.stderr };
}

/** `stat PATH` parsed; undefined when the path does not exist. */
/** One inode from debugfs `stat` output. */
function parseStat(out: string): Ext4Stat {
  const m = (re: RegExp) => re.exec(out)?.[1];
  const dev = /Device major\/minor number: ([0-9a-f]+):([0-9a-f]+)/.exec(out);
  return {
    inode: Number(m(/Inode: (\d+)/)),
    type: m(/Type: ([a-zA-Z ]+?)\s{2,}/) ?? '',
    mode: parseInt(m(/Mode:\s+(\d+)/) ?? '0', 8),
    uid: Number(m(/User:\s+(\d+)/)),
    gid: Number(m(/Group:\s+(\d+)/)),
    size: Number(m(/Size: (\d+)/)),
    links: Number(m(/Links: (\d+)/)),
    mtime: parseInt(m(/ mtime: 0x([0-9a-f]+)/) ?? '0', 16),
    linkTarget: m(/Fast link dest: "(.*)"/),
    device: dev ? [parseInt(dev[1]!, 16), parseInt(dev[2]!, 16)] : undefined,
  };
}

export function ext4Stat(img: string, path: string): Ext4Stat | undefined {
  const { out, err } = debugfs(img, `stat "${path}"`);
  if (/File not found/.test(err) || !out.includes('Inode:')) return undefined;
  return parseStat(out);
}

/** File content via `dump`. */
export function ext4Read(img: string, path: string): Buffer {
  const d = mkdtempSync(join(tmpdir(), 'banger-dump-'));
  try {
    const f = join(d, 'out');
    debugfs(img, `dump "${path}" ${f}`);
    return readFileSync(f);
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
}

export function sha256(b: Buffer | string): string {
  return createHash('sha256').update(b).digest('hex');
}

/** Raw value of one xattr via `ea_get -f`; undefined when absent. */
export function ext4Xattr(img: string, path: string, name: string): Buffer | undefined {
  const d = mkdtempSync(join(tmpdir(), 'banger-ea-'));
  try {
    const f = join(d, 'v');
    debugfs(img, `ea_get -f ${f} "${path}" ${name}`);
    try {
      return readFileSync(f);
    } catch {
      return undefined;
    }
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
}

/** Names in a directory (without . and ..). */
export function ext4Ls(img: string, path: string): string[] {
  const { out } = debugfs(img, `ls -p "${path}"`);
  return out
    .split('\n')
    .map((l) => l.split('/'))
    .filter((p) => p.length >= 6)
    .map((p) => p[5]!)
    .filter((n) => n && n !== '.' && n !== '..');
}

/** `e2fsck -fn` exit code (0 = clean). */
export function fsck(img: string): number {
  return spawnSync('e2fsck', ['-fn', img], { encoding: 'utf8' }).status ?? -1;
}

/** `stat` of many paths in one debugfs run (`-f` command file). Missing paths are absent from the map. */
export function ext4StatMany(img: string, paths: string[]): Map<string, Ext4Stat> {
  const d = mkdtempSync(join(tmpdir(), 'banger-statmany-'));
  try {
    const cmds = join(d, 'cmds');
    writeFileSync(cmds, paths.map((p) => `stat "${p}"`).join('\n') + '\n');
    const r = spawnSync('debugfs', ['-f', cmds, img], { encoding: 'utf8', maxBuffer: 1 << 30, env: { ...process.env, LC_ALL: 'C' } });
    const out = new Map<string, Ext4Stat>();
    const sections = r.stdout.split(/^debugfs: stat "/m).slice(1);
    for (const sec of sections) {
      const nl = sec.indexOf('\n');
      const path = sec.slice(0, nl).replace(/"$/, '');
      const body = sec.slice(nl + 1);
      if (!body.includes('Inode:')) continue;
      out.set(path, parseStat(body));
    }
    return out;
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
}

/** Dump the whole tree (`rdump / DIR`) to read file contents without mounting. */
export function ext4Rdump(img: string, dir: string): void {
  spawnSync('debugfs', ['-R', `rdump / ${dir}`, img], { encoding: 'utf8', env: { ...process.env, LC_ALL: 'C' } });
}
