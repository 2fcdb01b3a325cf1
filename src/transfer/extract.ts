import {
  closeSync,
  constants as C,
  fchmodSync,
  fchownSync,
  futimesSync,
  lchownSync,
  linkSync,
  lutimesSync,
  mkdirSync,
  openSync,
  readFileSync,
  symlinkSync,
  writeSync,
  chmodSync,
  utimesSync,
} from 'node:fs';
import { join } from 'node:path';
import { BangerError, ErrorCode } from '../core/errors.js';
import { TarReader, type EntrySink, type TarEntry } from '../core/tar-reader.js';

/**
 * Extraction of the tar stream a guest sends for `vm cp VM:SRC HOSTDST` and the SDK's
 * `files.copyOut` (both through receive.ts). The guest is
 * untrusted (root there is a stranger here), so the stream is input, read with banger's own
 * tar reader and written by this code, never by a host `tar`:
 *
 * - only `SRC`'s own entry (`top`, the basename of SRC) and entries under it are accepted;
 *   `.`/`..`/empty components, absolute names and NUL bytes are refused;
 * - every entry's parent must be a directory this stream created before it, and a name may
 *   appear once: nothing is ever written through a symlink, whether the stream made it or not
 *   (files are opened O_CREAT|O_EXCL|O_NOFOLLOW, symlinks are created as symlinks, never followed);
 * - regular files, directories, symlinks and hard links to a file or symlink this stream
 *   created are accepted; character and block devices, FIFOs (and sockets or any other type,
 *   which the reader refuses) are refused;
 * - setuid, setgid and sticky bits are dropped, always; xattrs are not applied; owners are
 *   restored only with `owners` (the caller passes it for `-a` when running as root), modes are
 *   then exact, otherwise masked by the umask like a normal copy; mtimes are kept;
 * - the entry count, name lengths and metadata records are bounded (`GUEST_TAR_LIMITS`);
 *   file content is not (the user asked for the copy).
 *
 * Extraction happens in `dir`, a fresh private directory the caller made (mkdtemp, 0700) and
 * removes on failure; the caller moves `dir/top` into place afterwards (receive.ts, place.ts).
 * A refusal is E_UNSAFE_ENTRY (or E_TOO_LARGE past a limit) naming the entry and why.
 */
export interface GuestTarLimits {
  /** Entries in one stream. */
  maxEntries: number;
  /** Bytes in one entry name or link target (PATH_MAX). */
  maxPathBytes: number;
  /** Bytes of all entry names together (the names of what was extracted are kept in memory). */
  maxTotalPathBytes: number;
  /** Bytes of PAX / GNU long-name records pending before one entry (see TarReader). */
  maxMetaBytes: number;
}

export const GUEST_TAR_LIMITS: GuestTarLimits = {
  maxEntries: 1_000_000,
  maxPathBytes: 4096,
  maxTotalPathBytes: 256 * 1024 * 1024,
  maxMetaBytes: 1024 * 1024,
};

/** Longest file name component Linux accepts (NAME_MAX). */
const NAME_MAX = 255;
/** mtimes further than this from the epoch (seconds, ~year 36800) are refused. */
const MAX_TIME = 2 ** 40;

export interface GuestTarOptions {
  /** The private directory to extract into (exists, empty, mode 0700). */
  dir: string;
  /** The one top-level name accepted: basename(SRC). */
  top: string;
  /** Restore owners (and modes exactly, without the umask): `-a` as root. */
  owners: boolean;
  limits?: Partial<GuestTarLimits>;
}

type Kind = 'dir' | 'file' | 'symlink';

/** The process umask, read without changing it (`process.umask()` without arguments is deprecated). */
export function currentUmask(): number {
  try {
    const m = /^Umask:\s*([0-7]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'));
    if (m) return parseInt(m[1]!, 8);
  } catch {
    /* not Linux: fall back below */
  }
  return 0o022;
}

export class GuestTarExtractor {
  private readonly reader: TarReader;
  private readonly limits: GuestTarLimits;
  private readonly umask = currentUmask();
  /** Every name extracted so far (relative to `dir`) and what it is. */
  private readonly seen = new Map<string, Kind>();
  /** Directories to give their final mode and mtime at the end, in creation order. */
  private readonly dirs: Array<{ rel: string; mode: number; mtime: number }> = [];
  private nameBytes = 0;
  private entries = 0;
  private openFd?: number;
  /** Entries accepted, files written and their bytes (for tests and messages). */
  readonly stats = { entries: 0, files: 0, bytes: 0 };

  constructor(private readonly opts: GuestTarOptions) {
    this.limits = { ...GUEST_TAR_LIMITS, ...opts.limits };
    this.reader = new TarReader((e) => this.entry(e), { maxMetaBytes: this.limits.maxMetaBytes });
  }

  push(chunk: Buffer): Promise<void> {
    return this.reader.push(chunk);
  }

  /** The stream ended: checks it was complete and that it held SRC, then applies directory modes and times. */
  end(): void {
    this.reader.end();
    if (!this.seen.has(this.opts.top)) throw new BangerError(ErrorCode.Invalid, `the guest's tar stream holds no entry '${this.opts.top}'`);
    // Children first (reverse creation order), so a read-only directory is finished last.
    for (let i = this.dirs.length - 1; i >= 0; i--) {
      const d = this.dirs[i]!;
      const abs = this.abs(d.rel);
      chmodSync(abs, d.mode);
      utimesSync(abs, d.mtime, d.mtime);
    }
  }

  /** Closes the file being written, if any (after a failure mid-entry). */
  release(): void {
    if (this.openFd !== undefined) closeSync(this.openFd);
    this.openFd = undefined;
  }

  private abs(rel: string): string {
    return join(this.opts.dir, rel);
  }

  private refuse(entry: string, why: string, code: string = ErrorCode.Unsafe): never {
    const shown = JSON.stringify(entry.length > 300 ? `${entry.slice(0, 300)}…` : entry).slice(1, -1);
    throw new BangerError(code, `refused entry '${shown}' of the guest's tar stream: ${why}`, {
      details: { entry: entry.slice(0, 4096), reason: why },
      hint: 'the whole copy was refused and nothing was written; a copy out of a VM accepts only SRC itself and what is under it (files, directories, symlinks, hard links within the copy): see `banger vm cp --help`',
    });
  }

  /** `top/a/b` from an entry name; refuses anything that is not a plain relative path under `top`. */
  private name(raw: string, entry: string, what: string): string {
    if (Buffer.byteLength(raw) > this.limits.maxPathBytes) this.refuse(entry, `${what} is longer than ${this.limits.maxPathBytes} bytes`, ErrorCode.TooLarge);
    if (raw.includes('\0')) this.refuse(entry, `${what} holds a NUL byte`);
    if (raw.startsWith('/')) this.refuse(entry, `${what} is an absolute path`);
    const rel = raw.replace(/\/+$/, '');
    const parts = rel.split('/');
    for (const p of parts) {
      if (p === '' || p === '.') this.refuse(entry, `${what} has an empty or '.' component`);
      if (p === '..') this.refuse(entry, `${what} has a '..' component`);
      if (Buffer.byteLength(p) > NAME_MAX) this.refuse(entry, `${what} has a component longer than ${NAME_MAX} bytes`, ErrorCode.TooLarge);
    }
    if (parts[0] !== this.opts.top) this.refuse(entry, `${what} is outside '${this.opts.top}', the only name this copy asked for`);
    return rel;
  }

  private entry(e: TarEntry): EntrySink | undefined {
    if (++this.entries > this.limits.maxEntries) this.refuse(e.path, `the stream has more than ${this.limits.maxEntries} entries`, ErrorCode.TooLarge);
    const rel = this.name(e.path, e.path, 'its name');
    if (this.seen.has(rel)) this.refuse(e.path, 'the name appears twice in the stream');
    const slash = rel.lastIndexOf('/');
    if (slash >= 0) {
      const parent = rel.slice(0, slash);
      const kind = this.seen.get(parent);
      if (kind !== 'dir')
        this.refuse(
          e.path,
          kind ? `its parent '${parent}' is a ${kind}, not a directory` : `its parent directory '${parent}' did not come before it in the stream`,
        );
    }
    if (e.type === 'char' || e.type === 'block' || e.type === 'fifo')
      this.refuse(
        e.path,
        `it is a ${e.type === 'fifo' ? 'FIFO' : `${e.type} device ${e.devmajor}:${e.devminor}`}; a copy out of a VM takes no device nodes or FIFOs`,
      );
    if (!Number.isSafeInteger(e.uid) || e.uid < 0 || e.uid > 0xfffffffe || !Number.isSafeInteger(e.gid) || e.gid < 0 || e.gid > 0xfffffffe)
      this.refuse(e.path, `its owner ${e.uid}:${e.gid} is out of range`);
    if (!Number.isFinite(e.mtime) || Math.abs(e.mtime) > MAX_TIME) this.refuse(e.path, `its mtime ${e.mtime} is out of range`);
    this.nameBytes += Buffer.byteLength(rel);
    if (this.nameBytes > this.limits.maxTotalPathBytes)
      this.refuse(e.path, `the names in the stream take more than ${this.limits.maxTotalPathBytes} bytes`, ErrorCode.TooLarge);
    // setuid, setgid and sticky bits are dropped whatever the guest says
    const mode = e.mode & 0o777 & (this.opts.owners ? 0o777 : ~this.umask);
    const abs = this.abs(rel);
    this.stats.entries++;
    switch (e.type) {
      case 'dir':
        // 0700 while it is filled; its own mode and mtime come at the end (end())
        mkdirSync(abs, 0o700);
        this.seen.set(rel, 'dir');
        if (this.opts.owners) lchownSync(abs, e.uid, e.gid);
        this.dirs.push({ rel, mode, mtime: e.mtime });
        return undefined;
      case 'symlink':
        if (!e.linkpath) this.refuse(e.path, 'it is a symlink with an empty target');
        if (e.linkpath.includes('\0')) this.refuse(e.path, 'its symlink target holds a NUL byte');
        if (Buffer.byteLength(e.linkpath) > this.limits.maxPathBytes)
          this.refuse(e.path, `its symlink target is longer than ${this.limits.maxPathBytes} bytes`, ErrorCode.TooLarge);
        symlinkSync(e.linkpath, abs);
        this.seen.set(rel, 'symlink');
        if (this.opts.owners) lchownSync(abs, e.uid, e.gid);
        lutimesSync(abs, e.mtime, e.mtime);
        return undefined;
      case 'link': {
        const target = this.name(e.linkpath, e.path, `its hard link target '${e.linkpath}'`);
        const kind = this.seen.get(target);
        if (kind !== 'file' && kind !== 'symlink')
          this.refuse(
            e.path,
            kind ? `its hard link target '${target}' is a directory` : `its hard link target '${target}' is not a file this stream created before it`,
          );
        // link(2) never follows a symlink; both names are inside the private directory
        linkSync(this.abs(target), abs);
        this.seen.set(rel, kind);
        return undefined;
      }
      case 'file':
        return this.file(rel, abs, e, mode);
    }
  }

  private file(rel: string, abs: string, e: TarEntry, mode: number): EntrySink | undefined {
    const fd = openSync(abs, C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, 0o600);
    this.openFd = fd;
    this.seen.set(rel, 'file');
    this.stats.files++;
    const finish = () => {
      this.openFd = undefined;
      try {
        if (this.opts.owners) fchownSync(fd, e.uid, e.gid);
        fchmodSync(fd, mode);
        futimesSync(fd, e.mtime, e.mtime);
      } finally {
        closeSync(fd);
      }
    };
    if (e.size === 0) {
      finish();
      return undefined;
    }
    return {
      write: (chunk) => {
        let off = 0;
        while (off < chunk.length) off += writeSync(fd, chunk, off, chunk.length - off);
        this.stats.bytes += chunk.length;
      },
      end: finish,
    };
  }
}
