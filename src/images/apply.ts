import {
  closeSync,
  constants as C,
  chmodSync,
  fchmodSync,
  fchownSync,
  futimesSync,
  linkSync,
  lchownSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  openSync,
  readdirSync,
  rmSync,
  symlinkSync,
  writeSync,
  type Stats,
} from 'node:fs';
import { join } from 'node:path';
import { BangerError, ErrorCode } from '../core/errors.js';
import type { Exec } from '../core/exec.js';
import { toolEnv } from '../core/exec.js';
import type { EntrySink, TarEntry } from '../core/tar-reader.js';
import { restoreXattrs } from './xattrs.js';

/**
 * Applies OCI layers (as tar entries) onto a staging directory, oldest layer first.
 *
 * Contract (a layer is hostile until proven otherwise):
 * - Entries are applied strictly one at a time, in archive order: `entry()` returns only when
 *   everything it did is finished (device nodes and FIFOs included), so no operation of one
 *   entry can run after a later entry swapped one of its parents for a symlink.
 * - Before an entry touches the tree, every parent directory of its path (and of a hard
 *   link's target) is checked with lstat from the root down: a symlink or a non-directory is
 *   E_UNSAFE_ENTRY naming the entry and the layer. (A directory checked since the last
 *   removal is not checked again: only a removal can change what a path is.) Files are opened O_EXCL|O_NOFOLLOW and get
 *   their owner, mode and times through the open descriptor; nothing follows a symlink.
 * - Paths are normalised (leading "./" dropped); absolute paths, ".." components and NUL
 *   bytes are rejected.
 * - Whiteouts: `.wh.NAME` removes NAME from lower layers; `.wh..wh..opq` empties the
 *   directory of everything that came from lower layers. A whiteout under a symlinked parent,
 *   or of an invalid name (`.wh.`, `.wh..`, `.wh..wh.*`), is E_UNSAFE_ENTRY. AUFS metadata at
 *   the top (`.wh..wh.plnk/`, `.wh..wh.aufs`) is skipped, as Docker does.
 * - Owners are numeric, modes (incl. setuid/setgid/sticky) are set after the owner, device
 *   nodes and FIFOs are made with mknod(1) (argv) and awaited, xattrs are restored with one
 *   `setfattr -h --restore` run in `finish()` (after every chown, which would clear
 *   security.capability), directory mtimes last; both re-check the parents first.
 * - Limits (`ApplyLimits`, config `imageLimits`): more entries or more regular-file bytes
 *   than allowed (all layers of the image together) is E_TOO_LARGE naming the entry.
 */
export interface ApplyLimits {
  maxEntries: number;
  maxBytes: number;
}

/** The defaults of config `imageLimits` (src/core/config.ts). */
export const DEFAULT_LIMITS: ApplyLimits = { maxEntries: 2_000_000, maxBytes: 64 * 1024 ** 3 };

export interface ApplyOptions {
  exec: Exec;
  signal?: AbortSignal;
  limits?: ApplyLimits;
}

const OPAQUE = '.wh..wh..opq';
const WH = '.wh.';
const WH_META = '.wh..wh.';

export class LayerApplier {
  /** xattrs and directory mtimes applied in finish(), by relative path. */
  private readonly xattrs = new Map<string, Map<string, Buffer>>();
  private readonly dirTimes = new Map<string, number>();
  private layerPaths = new Set<string>();
  /**
   * Directories lstat-verified (real directories, no symlink above them) since the last
   * removal. Sound because entries are applied one at a time and only `remove()` can turn a
   * directory on a path into something else (a replaced entry is always removed first), and
   * every removal clears the whole set.
   */
  private readonly verified = new Set<string>();
  private openFd?: number;
  private layer = '';
  /** Regular-file bytes written (all layers, before whiteouts). */
  bytesWritten = 0;
  entries = 0;

  private readonly limits: ApplyLimits;
  private readonly umask: number;
  private readonly uid = process.geteuid?.() ?? 0;
  private readonly gid = process.getegid?.() ?? 0;

  constructor(
    readonly root: string,
    private readonly opts: ApplyOptions,
  ) {
    this.limits = opts.limits ?? DEFAULT_LIMITS;
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

  /** 'layer sha256:<12 hex>' for a digest, else the whole name (`file /path/x.tar`). */
  private layerName(): string {
    return this.layer.startsWith('sha256:') ? `layer ${this.layer.slice(0, 19)}` : this.layer;
  }

  private unsafe(entry: string, why: string): never {
    throw new BangerError(ErrorCode.Unsafe, `${this.layerName()}: entry '${entry}' ${why}`, {
      hint: 'the image contains an entry that would escape the root filesystem; it was rejected and nothing was kept',
      details: { entry, layer: this.layer },
    });
  }

  private tooLarge(entry: string, what: string, key: keyof ApplyLimits): never {
    throw new BangerError(ErrorCode.TooLarge, `${this.layerName()}: entry '${entry}' ${what}`, {
      hint: `the image unpacks to more than imageLimits.${key} allows; raise it in the daemon config if the image is genuine`,
      details: { entry, layer: this.layer, limit: `imageLimits.${key}`, value: this.limits[key] },
    });
  }

  /** Normalise a tar path to a relative path ('' = the root). Rejects escapes. */
  normalise(raw: string, what = 'path', entry = raw): string {
    if (raw.startsWith('/')) this.unsafe(entry, `has an absolute ${what}${entry === raw ? '' : ` '${raw}'`}`);
    if (raw.includes('\0')) this.unsafe(entry, `has a NUL byte in its ${what}`);
    const parts: string[] = [];
    for (const p of raw.split('/')) {
      if (p === '' || p === '.') continue;
      if (p === '..') this.unsafe(entry, `has a '..' component in its ${what}${entry === raw ? '' : ` '${raw}'`}`);
      parts.push(p);
    }
    return parts.join('/');
  }

  private abs(rel: string): string {
    return rel ? `${this.root}/${rel}` : this.root;
  }

  private lstat(rel: string): Stats | undefined {
    return lstatSync(this.abs(rel), { throwIfNoEntry: false });
  }

  /**
   * Check every parent directory of `rel` with lstat, from the root down: a symlink or a
   * non-directory is E_UNSAFE_ENTRY naming `entry` (`target`: `rel` is a hard link's target).
   * Missing parents are created (0755) when `create`; otherwise returns false at the first
   * missing one (nothing below it exists).
   */
  private parents(rel: string, entry: string, create: boolean, target = false): boolean {
    const last = rel.lastIndexOf('/');
    if (last < 0 || this.verified.has(rel.slice(0, last))) return true;
    for (let i = rel.indexOf('/'); i >= 0; i = rel.indexOf('/', i + 1)) {
      const dir = rel.slice(0, i);
      if (this.verified.has(dir)) continue;
      const st = this.lstat(dir);
      if (!st) {
        if (!create) return false;
        mkdirSync(this.abs(dir), { mode: 0o755 });
      } else if (st.isSymbolicLink()) {
        this.unsafe(
          entry,
          target ? `has a hard link target '${rel}' that passes through the symlink '${dir}'` : `would be written through the symlink '${dir}'`,
        );
      } else if (!st.isDirectory()) {
        this.unsafe(entry, `has a parent '${dir}' that is not a directory`);
      }
      this.verified.add(dir);
    }
    return true;
  }

  private forget(rel: string): void {
    const prefix = rel + '/';
    for (const m of [this.xattrs, this.dirTimes]) {
      m.delete(rel);
      for (const k of m.keys()) if (k.startsWith(prefix)) m.delete(k);
    }
  }

  /** Remove `rel` (never following a symlink: rm unlinks the link itself). Parents checked by the caller. */
  private remove(rel: string): void {
    this.verified.clear();
    rmSync(this.abs(rel), { recursive: true, force: true });
    this.forget(rel);
  }

  /** Handle one tar entry; returns a sink for file content. Resolves when the entry is fully applied. */
  async entry(e: TarEntry): Promise<EntrySink | undefined> {
    if (this.opts.signal?.aborted) throw new BangerError(ErrorCode.Cancelled, 'operation cancelled');
    if (++this.entries > this.limits.maxEntries) this.tooLarge(e.path, `is past the limit of ${this.limits.maxEntries} entries for one image`, 'maxEntries');
    const rel = this.normalise(e.path);
    if (rel.startsWith(WH_META) && rel !== OPAQUE) return undefined; // AUFS metadata (.wh..wh.plnk/…), skipped as Docker does
    const slash = rel.lastIndexOf('/');
    const base = rel.slice(slash + 1);
    const dirRel = slash < 0 ? '' : rel.slice(0, slash);
    if (base.startsWith(WH)) {
      this.whiteout(rel, dirRel, base, e.path);
      return undefined;
    }
    if (rel === '') {
      // the root directory itself: only metadata
      if (e.type !== 'dir') this.unsafe(e.path, 'replaces the root directory with a non-directory');
      this.meta('', e);
      return undefined;
    }
    this.parents(rel, e.path, true);
    this.layerPaths.add(rel);
    const abs = this.abs(rel);
    const existing = this.lstat(rel);
    if (existing && !(existing.isDirectory() && e.type === 'dir')) this.remove(rel);
    else if (existing) this.forget(rel); // dir over dir: keep children, take new metadata
    switch (e.type) {
      case 'dir':
        if (!existing) mkdirSync(abs, { mode: e.mode & 0o777 });
        this.meta(rel, e, !existing);
        return undefined;
      case 'symlink':
        if (!e.linkpath || e.linkpath.includes('\0')) this.unsafe(e.path, 'is a symlink with an empty target or a NUL byte in it');
        symlinkSync(e.linkpath, abs);
        this.meta(rel, e, true);
        return undefined;
      case 'link':
        this.hardLink(rel, e);
        return undefined;
      case 'char':
      case 'block':
      case 'fifo':
        await this.node(rel, e);
        return undefined;
      case 'file':
        return this.file(rel, e);
    }
  }

  private whiteout(rel: string, dirRel: string, base: string, entry: string): void {
    if (base === OPAQUE) {
      if (this.parents(rel, entry, false)) this.opaque(dirRel);
      return;
    }
    const name = base.slice(WH.length);
    if (!name || name === '.' || name === '..' || name.startsWith(WH)) this.unsafe(entry, `is a whiteout of an invalid name '${name}'`);
    if (!this.parents(rel, entry, false)) return; // its directory does not exist: nothing to remove
    this.remove(dirRel ? `${dirRel}/${name}` : name);
  }

  private hardLink(rel: string, e: TarEntry): void {
    const target = this.normalise(e.linkpath, 'hard link target', e.path);
    if (!target) this.unsafe(e.path, 'is a hard link to the root directory');
    const tst = this.parents(target, e.path, false, true) ? this.lstat(target) : undefined;
    if (!tst) this.unsafe(e.path, `is a hard link to '${e.linkpath}', which does not exist`);
    if (tst.isDirectory()) this.unsafe(e.path, `is a hard link to the directory '${e.linkpath}'`);
    linkSync(this.abs(target), this.abs(rel)); // link(2) never follows a symlink target
    const x = this.xattrs.get(target);
    if (x) this.xattrs.set(rel, x);
  }

  /** A device node or FIFO via mknod(1), awaited: the next entry starts only after it and its metadata. */
  private async node(rel: string, e: TarEntry): Promise<void> {
    const abs = this.abs(rel);
    const argv = e.type === 'fifo' ? ['mknod', abs, 'p'] : ['mknod', abs, e.type === 'char' ? 'c' : 'b', String(e.devmajor), String(e.devminor)];
    await this.opts.exec(argv, { env: toolEnv(), signal: this.opts.signal });
    // nothing else touched the tree meanwhile; checked again all the same before chown/chmod
    this.parents(rel, e.path, false);
    const st = this.lstat(rel);
    const kind = e.type === 'fifo' ? st?.isFIFO() : e.type === 'char' ? st?.isCharacterDevice() : st?.isBlockDevice();
    if (!kind) throw new BangerError(ErrorCode.Internal, `${this.layerName()}: entry '${e.path}': mknod did not create a ${e.type} node`);
    this.meta(rel, e);
  }

  private file(rel: string, e: TarEntry): EntrySink | undefined {
    const fd = openSync(this.abs(rel), C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, e.mode & 0o777);
    this.openFd = fd;
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      this.openFd = undefined;
      try {
        // owner, then mode (chown clears setuid), then mtime: all through the descriptor
        const chowned = e.uid !== this.uid || e.gid !== this.gid;
        if (chowned) fchownSync(fd, e.uid, e.gid);
        if (chowned || e.mode & 0o7000 || e.mode & this.umask) fchmodSync(fd, e.mode);
        futimesSync(fd, e.mtime, e.mtime);
      } finally {
        closeSync(fd);
      }
      if (e.xattrs.size) this.xattrs.set(rel, e.xattrs);
    };
    if (e.size === 0) {
      finish();
      return undefined;
    }
    if (this.bytesWritten + e.size > this.limits.maxBytes) {
      this.tooLarge(e.path, `(${e.size} bytes) would take the image past the limit of ${this.limits.maxBytes} bytes`, 'maxBytes');
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

  /**
   * Owner, then mode (chown clears setuid), then mtime, by path (directories, symlinks, nodes,
   * the root; parents checked by the caller); xattrs and directory mtimes deferred. `created` =
   * we just made it with `mode & 0o777` (so chown/chmod are skipped when they change nothing).
   */
  private meta(rel: string, e: TarEntry, created = false): void {
    const abs = this.abs(rel);
    const chowned = !created || e.uid !== this.uid || e.gid !== this.gid;
    if (chowned) lchownSync(abs, e.uid, e.gid);
    if (e.type !== 'symlink' && (!created || chowned || e.mode & 0o7000 || e.mode & this.umask)) chmodSync(abs, e.mode);
    if (e.xattrs.size) this.xattrs.set(rel, e.xattrs);
    if (e.type === 'dir') this.dirTimes.set(rel, e.mtime);
    else lutimesSync(abs, e.mtime, e.mtime);
  }

  private opaque(dirRel: string): void {
    const st = this.lstat(dirRel);
    if (!st || !st.isDirectory()) return;
    // keep what this layer already put there (entries, and directories holding them)
    const keep = new Set<string>();
    for (const p of this.layerPaths) {
      const parts = p.split('/');
      for (let i = 1; i <= parts.length; i++) keep.add(parts.slice(0, i).join('/'));
    }
    for (const child of readdirSync(this.abs(dirRel))) {
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

  /** True when `rel` exists and no parent of it is a symlink (then it is left alone). */
  private inside(rel: string): boolean {
    try {
      return rel === '' || (this.parents(rel, rel, false) && this.lstat(rel) !== undefined);
    } catch {
      return false;
    }
  }

  /** Finish: restore xattrs in one setfattr run, then directory mtimes (deepest first). */
  async finish(): Promise<void> {
    await restoreXattrs(
      this.root,
      [...this.xattrs].filter(([rel]) => this.inside(rel)),
      this.opts,
    );
    const dirs = [...this.dirTimes].sort((a, b) => b[0].split('/').length - a[0].split('/').length);
    for (const [rel, t] of dirs) if (this.inside(rel)) lutimesSync(this.abs(rel), t, t);
  }
}
