import type { Readable } from 'node:stream';
import { BangerError, ErrorCode } from '../core/errors.js';
import type { RpcClient } from '../rpc/client.js';
import { copyIn, copyOut } from './copy.js';
import { execCollect, type ExecOptions, type ExecResult } from './process.js';

/** What `stat` reports (lstat: a symlink is reported as one, not followed). */
export interface FileStat {
  type: 'file' | 'dir' | 'symlink' | 'other';
  /** Permission bits (e.g. 0o644). */
  mode: number;
  size: number;
}

/** One entry of `list`. */
export interface FileEntry extends FileStat {
  name: string;
  /** The entry's absolute path in the guest. */
  path: string;
  mtime: Date;
}

/** Exit codes of the helper scripts below, mapped to error codes. */
const NOT_FOUND = 3;
const IS_DIR = 4;
const NOT_DIR = 5;

/** Most entries `list` returns (the guest is untrusted: its answer is bounded). */
const MAX_ENTRIES = 100_000;

/**
 * `vm.files`: files in the guest, through the guest agent (no SSH, no network). Reads and
 * listings run small POSIX sh scripts (coreutils or busybox) over `vm.exec`; `stat` is the
 * agent's own lstat (`vm.stat`); copies of whole trees are tar streams (`vm.cpIn`/`vm.cpOut`).
 * Paths are absolute guest paths.
 */
export class VmFiles {
  /** @internal */
  constructor(
    private readonly rpc: RpcClient,
    private readonly vm: string,
  ) {}

  private async sh(script: string, args: string[], path: string, o: ExecOptions = {}): Promise<ExecResult> {
    absolute(path);
    const r = await execCollect(this.rpc.socketPath, this.vm, 'sh', { ...o, args: ['-c', script, 'sh', ...args] });
    if (r.exitCode === 0) return r;
    const why = r.stderr.toString('utf8').trim().split('\n').slice(-3).join('; ');
    if (r.exitCode === NOT_FOUND) throw new BangerError(ErrorCode.NotFound, `${this.vm}:${path}: no such file or directory`);
    if (r.exitCode === IS_DIR) throw new BangerError(ErrorCode.Invalid, `${this.vm}:${path} is a directory`);
    if (r.exitCode === NOT_DIR) throw new BangerError(ErrorCode.Invalid, `${this.vm}:${path} is not a directory`);
    throw new BangerError(ErrorCode.Exec, `${this.vm}:${path}: failed (exit ${r.exitCode})${why ? `: ${why}` : ''}`, { details: { exitCode: r.exitCode } });
  }

  /** A file's bytes. E_NOT_FOUND, E_INVALID for a directory, E_TOO_LARGE past `maxBytes` (default 64 MiB). */
  async read(path: string, opts: { maxBytes?: number; signal?: AbortSignal } = {}): Promise<Buffer> {
    const r = await this.sh(`[ -e "$1" ] || exit ${NOT_FOUND}; [ -d "$1" ] && exit ${IS_DIR}; exec cat -- "$1"`, [path], path, {
      maxBuffer: opts.maxBytes,
      signal: opts.signal,
    });
    return r.stdout;
  }

  /** A file's text (UTF-8). */
  async readText(path: string, opts: { maxBytes?: number; signal?: AbortSignal } = {}): Promise<string> {
    return (await this.read(path, opts)).toString('utf8');
  }

  /**
   * Writes a file atomically (a temp file beside it, then a rename): `data` is bytes, text or a
   * stream. The directory must exist (`mkdir` it first). `mode` defaults to 0o644.
   */
  async write(path: string, data: string | Uint8Array | Readable, opts: { mode?: number; signal?: AbortSignal } = {}): Promise<void> {
    const mode = (opts.mode ?? 0o644).toString(8);
    if (!/^[0-7]{1,4}$/.test(mode)) throw new BangerError(ErrorCode.Invalid, `mode ${opts.mode} is not a file mode`);
    const script = [
      `[ -d "$1" ] && exit ${IS_DIR}`,
      `d=$(dirname -- "$1"); [ -d "$d" ] || exit ${NOT_FOUND}`,
      't="$d/.banger-write.$$"',
      'if cat > "$t" && chmod "$2" "$t" && mv -f -- "$t" "$1"; then exit 0; fi',
      'rc=$?; rm -f -- "$t"; exit $rc',
    ].join('\n');
    await this.sh(script, [path, mode], path, { stdin: data, signal: opts.signal });
  }

  /** The entries of a directory (not recursive; `.` and `..` left out), sorted by name. */
  async list(path: string, opts: { signal?: AbortSignal } = {}): Promise<FileEntry[]> {
    const script = [
      `[ -e "$1" ] || exit ${NOT_FOUND}; [ -d "$1" ] || exit ${NOT_DIR}; cd -- "$1" || exit 1`,
      'for f in * .*; do',
      '  case "$f" in .|..) continue;; esac',
      '  [ -e "$f" ] || [ -L "$f" ] || continue',
      '  stat -c \'%f %s %Y %n\' -- "$f" || exit 1',
      "  printf '\\000'",
      'done',
    ].join('\n');
    const r = await this.sh(script, [path], path, { signal: opts.signal, maxBuffer: 64 << 20 });
    const base = path.endsWith('/') ? path : `${path}/`;
    const out: FileEntry[] = [];
    for (const rec of r.stdout.toString('utf8').split('\n\0')) {
      if (!rec) continue;
      const m = /^([0-9a-f]+) (\d+) (\d+) ([\s\S]+)$/.exec(rec);
      if (!m) throw new BangerError(ErrorCode.Agent, `${this.vm}:${path}: unreadable listing line`);
      if (out.length >= MAX_ENTRIES) throw new BangerError(ErrorCode.TooLarge, `${this.vm}:${path}: more than ${MAX_ENTRIES} entries`);
      const raw = parseInt(m[1]!, 16);
      out.push({ name: m[4]!, path: base + m[4]!, type: typeOfMode(raw), mode: raw & 0o7777, size: Number(m[2]), mtime: new Date(Number(m[3]) * 1000) });
    }
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /** lstat of a path (through the agent). E_NOT_FOUND when nothing is there. */
  async stat(path: string): Promise<FileStat> {
    absolute(path);
    const s = await this.rpc.request('vm.stat', { name: this.vm, path });
    if (!s.exists) throw new BangerError(ErrorCode.NotFound, `${this.vm}:${path}: no such file or directory`);
    return { type: s.type ?? 'other', mode: (s.mode ?? 0) & 0o7777, size: s.size ?? 0 };
  }

  /** True when something (even a dangling symlink) is at `path`. */
  async exists(path: string): Promise<boolean> {
    absolute(path);
    return (await this.rpc.request('vm.stat', { name: this.vm, path })).exists;
  }

  /** Creates a directory, with its parents by default (`recursive: false` to refuse them). */
  async mkdir(path: string, opts: { recursive?: boolean; mode?: number } = {}): Promise<void> {
    const args = opts.recursive === false ? [] : ['-p'];
    if (opts.mode !== undefined) args.push('-m', opts.mode.toString(8));
    await this.sh('d="$1"; shift; exec mkdir "$@" -- "$d"', [path, ...args], path);
  }

  /** Removes a file (a directory with `recursive`). E_NOT_FOUND unless `force`. */
  async rm(path: string, opts: { recursive?: boolean; force?: boolean } = {}): Promise<void> {
    if (path.replace(/\/+$/, '') === '') throw new BangerError(ErrorCode.Invalid, 'refusing to remove /');
    const flags = `-f${opts.recursive ? 'r' : ''}`;
    await this.sh(
      `[ -e "$1" ] || [ -L "$1" ] || { [ "$2" = force ] && exit 0; exit ${NOT_FOUND}; }; exec rm ${flags} -- "$1"`,
      [path, opts.force ? 'force' : ''],
      path,
    );
  }

  /**
   * Copies a host file or directory tree to exactly `guestPath` (its parent must exist; what
   * is there is replaced for a file, merged into for a directory). Modes, numeric owners,
   * mtimes and symlinks are kept. Needs tar in the guest.
   */
  copyIn(hostPath: string, guestPath: string, opts: { signal?: AbortSignal } = {}): Promise<void> {
    absolute(guestPath);
    return copyIn(this.rpc, this.vm, hostPath, guestPath, opts.signal);
  }

  /**
   * Copies a guest file or directory tree to exactly `hostPath`, which must not exist yet (its
   * parent must). Owners and setuid/setgid bits from the guest are not kept: the copy belongs to
   * the caller. Needs tar in the guest.
   */
  copyOut(guestPath: string, hostPath: string, opts: { signal?: AbortSignal } = {}): Promise<void> {
    absolute(guestPath);
    return copyOut(this.rpc, this.vm, guestPath, hostPath, opts.signal);
  }
}

function absolute(path: string): void {
  if (!path.startsWith('/')) throw new BangerError(ErrorCode.Invalid, `guest path '${path}' must be absolute`, { details: { field: 'path' } });
  if (path.includes('\0')) throw new BangerError(ErrorCode.Invalid, 'guest path must not contain NUL', { details: { field: 'path' } });
}

function typeOfMode(raw: number): FileStat['type'] {
  const t = raw & 0o170000;
  return t === 0o100000 ? 'file' : t === 0o040000 ? 'dir' : t === 0o120000 ? 'symlink' : 'other';
}
