import {
  closeSync,
  constants as C,
  linkSync,
  lchownSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  openSync,
  readdirSync,
  rmSync,
  symlinkSync,
  chmodSync,
  writeSync,
  type Stats,
} from 'node:fs';
import { writeFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { BangerError, ErrorCode } from '../core/errors.js';
import type { Exec } from '../core/exec.js';
import { toolEnv } from '../core/exec.js';
import type { EntrySink, TarEntry } from './tar.js';

/**
 * Applies OCI layers (as tar entries) onto a staging directory, oldest layer first.
 *
 * Contract:
 * - Paths are normalised (leading "./" dropped); absolute paths, ".." components and any
 *   entry whose parent (or hard-link target's parent) is a symlink are rejected with
 *   E_UNSAFE_ENTRY naming the entry and the layer. Nothing is ever created by following a
 *   symlink: parents are checked with lstat, files are opened O_EXCL|O_NOFOLLOW.
 * - Whiteouts: `.wh.NAME` removes NAME from lower layers; `.wh..wh..opq` empties the
 *   directory of everything that came from lower layers.
 * - Owners are numeric (lchown), modes (incl. setuid/setgid/sticky) are set after chown,
 *   device nodes and FIFOs are made with mknod(1) (argv), xattrs are restored with one
 *   `setfattr --restore` run at the end (after every chown, which would clear
 *   security.capability), mtimes last (directories after all layers).
 */
export interface ApplyOptions {
  exec: Exec;
  signal?: AbortSignal;
}

interface Pending {
  xattrs: Map<string, Map<string, Buffer>>;
  dirTimes: Map<string, number>;
}

const OPAQUE = '.wh..wh..opq';
const WH = '.wh.';

export class LayerApplier {
  private pending: Pending = { xattrs: new Map(), dirTimes: new Map() };
  private layerPaths = new Set<string>();
  private openFd?: number;
  /** Relative paths known to be real directories we created or checked (never symlinks). */
  private readonly dirs = new Set<string>();
  /** Device nodes and FIFOs being made by mknod(1), awaited before their path is touched. */
  private readonly nodes = new Map<string, Promise<void>>();
  private layer = '';
  /** Regular-file bytes written (all layers, before whiteouts). */
  bytesWritten = 0;
  entries = 0;

  private readonly umask: number;
  private readonly uid = process.geteuid?.() ?? 0;
  private readonly gid = process.getegid?.() ?? 0;

  constructor(readonly root: string, private readonly opts: ApplyOptions) {
    // the process umask, probed (process.umask() without arguments is deprecated)
    const probe = join(root, `.umask-probe-${process.pid}`);
    closeSync(openSync(probe, C.O_WRONLY | C.O_CREAT | C.O_EXCL, 0o777));
    this.umask = 0o777 & ~lstatSync(probe).mode;
    rmSync(probe);
  }

  /** Start a new layer (digest used in error messages). */
  beginLayer(digest: string): void {
    this.layer = digest;
    this.layerPaths = new Set();
  }

  private unsafe(entry: string, why: string): never {
    throw new BangerError(ErrorCode.Unsafe, `layer ${this.layer.slice(0, 19)}: entry '${entry}' ${why}`, {
      hint: 'the image contains an entry that would escape the root filesystem; it was rejected and nothing was kept',
      details: { entry, layer: this.layer },
    });
  }

  /** Normalise a tar path to a relative path ('' = the root). Rejects escapes. */
  normalise(raw: string, what = 'path', entry = raw): string {
    if (raw.startsWith('/')) this.unsafe(entry, `has an absolute ${what}${entry === raw ? '' : ` '${raw}'`}`);
    const parts: string[] = [];
    for (const p of raw.split('/')) {
      if (p === '' || p === '.') continue;
      if (p === '..') this.unsafe(entry, `has a '..' component in its ${what}${entry === raw ? '' : ` '${raw}'`}`);
      parts.push(p);
    }
    return parts.join('/');
  }

  private lstat(abs: string): Stats | undefined {
    return lstatSync(abs, { throwIfNoEntry: false });
  }

  /** Make sure every parent of `rel` is a real directory (creating missing ones), never a symlink. */
  private ensureParents(rel: string, entry: string): void {
    const last = rel.lastIndexOf('/');
    if (last < 0 || this.dirs.has(rel.slice(0, last))) return;
    const parts = rel.split('/');
    let cur = this.root;
    for (let i = 0; i < parts.length - 1; i++) {
      cur = join(cur, parts[i]!);
      const relDir = parts.slice(0, i + 1).join('/');
      if (this.dirs.has(relDir)) continue;
      const st = this.lstat(cur);
      if (!st) {
        mkdirSync(cur, { mode: 0o755 });
        this.dirs.add(relDir);
        continue;
      }
      if (st.isDirectory()) {
        this.dirs.add(relDir);
        continue;
      }
      if (st.isSymbolicLink()) this.unsafe(entry, `would be written through the symlink '${parts.slice(0, i + 1).join('/')}'`);
      if (!st.isDirectory()) this.unsafe(entry, `has a parent '${parts.slice(0, i + 1).join('/')}' that is not a directory`);
    }
  }

  private forget(rel: string): void {
    const prefix = rel + '/';
    for (const m of [this.pending.xattrs, this.pending.dirTimes]) {
      m.delete(rel);
      for (const k of m.keys()) if (k.startsWith(prefix)) m.delete(k);
    }
  }

  private remove(rel: string): void {
    rmSync(join(this.root, rel), { recursive: true, force: true });
    this.forget(rel);
    this.dirs.delete(rel);
    const prefix = rel + '/';
    for (const d of this.dirs) if (d.startsWith(prefix)) this.dirs.delete(d);
  }

  /** Handle one tar entry; returns a sink for file content. */
  async entry(e: TarEntry): Promise<EntrySink | undefined> {
    if (this.opts.signal?.aborted) throw new BangerError(ErrorCode.Cancelled, 'operation cancelled');
    this.entries++;
    const rel = this.normalise(e.path);
    if (this.nodes.size && (this.nodes.has(rel) || e.type === 'link' || e.path.includes('.wh.'))) await this.settleNodes();
    const base = rel.slice(rel.lastIndexOf('/') + 1);
    const dirRel = rel.includes('/') ? rel.slice(0, rel.lastIndexOf('/')) : '';
    if (base === OPAQUE) {
      this.ensureParents(rel, e.path);
      this.opaque(dirRel);
      return undefined;
    }
    if (base.startsWith(WH)) {
      this.ensureParents(rel, e.path);
      const victim = (dirRel ? dirRel + '/' : '') + base.slice(WH.length);
      if (!victim || base.slice(WH.length) === '..' || base.slice(WH.length) === '.') this.unsafe(e.path, 'is a whiteout of an invalid name');
      this.remove(victim);
      return undefined;
    }
    if (rel === '') {
      // the root directory itself: only metadata
      if (e.type !== 'dir') this.unsafe(e.path, 'replaces the root directory with a non-directory');
      this.meta('', e);
      return undefined;
    }
    this.ensureParents(rel, e.path);
    this.layerPaths.add(rel);
    const abs = join(this.root, rel);
    const existing = this.lstat(abs);
    if (existing && !(existing.isDirectory() && e.type === 'dir')) this.remove(rel);
    else if (existing) this.forget(rel); // dir over dir: keep children, take new metadata
    switch (e.type) {
      case 'dir':
        if (!existing) mkdirSync(abs, { mode: e.mode & 0o777 });
        this.dirs.add(rel);
        this.meta(rel, e, !existing);
        return undefined;
      case 'symlink':
        symlinkSync(e.linkpath, abs);
        this.meta(rel, e, true);
        return undefined;
      case 'link': {
        const target = this.normalise(e.linkpath, 'hard link target', e.path);
        if (!target) this.unsafe(e.path, 'is a hard link to the root directory');
        this.ensureParents(target, e.path);
        const tst = this.lstat(join(this.root, target));
        if (!tst) this.unsafe(e.path, `is a hard link to '${e.linkpath}', which does not exist`);
        if (tst.isDirectory()) this.unsafe(e.path, `is a hard link to the directory '${e.linkpath}'`);
        linkSync(join(this.root, target), abs);
        const x = this.pending.xattrs.get(target);
        if (x) this.pending.xattrs.set(rel, x);
        return undefined;
      }
      case 'char':
      case 'block':
      case 'fifo': {
        // mknod(1) runs concurrently with the rest of the layer; settled before the path is
        // touched again and at the end of the layer
        const argv = e.type === 'fifo' ? ['mknod', abs, 'p'] : ['mknod', abs, e.type === 'char' ? 'c' : 'b', String(e.devmajor), String(e.devminor)];
        const made = this.opts.exec(argv, { env: toolEnv(), signal: this.opts.signal }).then(() => this.meta(rel, e));
        made.catch(() => {}); // observed in settleNodes()
        this.nodes.set(rel, made);
        return undefined;
      }
      case 'file': {
        const fd = openSync(abs, C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, e.mode & 0o777);
        this.openFd = fd;
        let done = false;
        const finish = () => {
          if (done) return;
          done = true;
          this.openFd = undefined;
          closeSync(fd);
          this.meta(rel, e, true);
        };
        if (e.size === 0) {
          finish();
          return undefined;
        }
        return {
          write: (chunk) => {
            let off = 0;
            while (off < chunk.length) off += writeSync(fd, chunk, off, chunk.length - off);
            this.bytesWritten += chunk.length;
          },
          end: finish,
        };
      }
    }
  }

  /**
   * Owner, then mode (chown clears setuid), then mtime; xattrs deferred. `created` = we just
   * made it with `mode & 0o777` (so chown/chmod are skipped when they would change nothing).
   */
  private meta(rel: string, e: TarEntry, created = false): void {
    const abs = rel ? join(this.root, rel) : this.root;
    const chowned = !created || e.uid !== this.uid || e.gid !== this.gid;
    if (chowned) lchownSync(abs, e.uid, e.gid);
    if (e.type !== 'symlink' && (!created || chowned || e.mode & 0o7000 || e.mode & this.umask)) chmodSync(abs, e.mode);
    if (e.xattrs.size) this.pending.xattrs.set(rel, e.xattrs);
    if (e.type === 'dir') this.pending.dirTimes.set(rel, e.mtime);
    else lutimesSync(abs, e.mtime, e.mtime);
  }

  private opaque(dirRel: string): void {
    const abs = dirRel ? join(this.root, dirRel) : this.root;
    const st = this.lstat(abs);
    if (!st || !st.isDirectory()) return;
    // keep what this layer already put there (entries, and directories holding them)
    const keep = new Set<string>();
    for (const p of this.layerPaths) {
      const parts = p.split('/');
      for (let i = 1; i <= parts.length; i++) keep.add(parts.slice(0, i).join('/'));
    }
    for (const child of readdirSync(abs)) {
      const rel = (dirRel ? dirRel + '/' : '') + child;
      if (keep.has(rel)) continue;
      this.remove(rel);
    }
  }

  /** Close the file being written when the stream failed mid-entry (no fd outlives a failure). */
  release(): void {
    if (this.openFd === undefined) return;
    const fd = this.openFd;
    this.openFd = undefined;
    try {
      closeSync(fd);
    } catch {
      /* already closed */
    }
  }

  /** Wait for every pending mknod; throws the first failure. */
  async settleNodes(): Promise<void> {
    const all = [...this.nodes.values()];
    this.nodes.clear();
    await Promise.all(all);
  }

  /** Call after the last entry of a layer. */
  async endLayer(): Promise<void> {
    await this.settleNodes();
  }

  /** Finish: restore xattrs in one setfattr run, then directory mtimes (deepest first). */
  async finish(): Promise<void> {
    await this.settleNodes();
    if (this.pending.xattrs.size) {
      const lines: string[] = [];
      for (const [rel, attrs] of this.pending.xattrs) {
        if (!this.lstat(rel ? join(this.root, rel) : this.root)) continue;
        lines.push(`# file: ${escapePath(rel || '.')}`);
        for (const [k, v] of attrs) lines.push(`${escapePath(k)}=0s${v.toString('base64')}`);
        lines.push('');
      }
      const dump = join(this.root, '..', `.xattrs-${process.pid}-${Date.now()}.txt`);
      await writeFile(dump, lines.join('\n') + '\n');
      try {
        await this.opts.exec(['setfattr', '-h', `--restore=${dump}`], { cwd: this.root, env: toolEnv(), signal: this.opts.signal });
      } finally {
        await rm(dump, { force: true });
      }
    }
    const dirs = [...this.pending.dirTimes].sort((a, b) => b[0].split('/').length - a[0].split('/').length);
    for (const [rel, t] of dirs) {
      const abs = rel ? join(this.root, rel) : this.root;
      if (this.lstat(abs)) lutimesSync(abs, t, t);
    }
  }
}

/** getfattr-style escaping: control characters, backslash, '=' and non-ASCII as \ooo. */
function escapePath(p: string): string {
  let out = '';
  for (const b of Buffer.from(p, 'utf8')) {
    out += b < 0x21 || b >= 0x7f || b === 0x5c || b === 0x3d ? '\\' + b.toString(8).padStart(3, '0') : String.fromCharCode(b);
  }
  return out;
}
