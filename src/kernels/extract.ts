import { KERNEL_FILES } from './files.js';
import { createHash, type Hash } from 'node:crypto';
import { createReadStream, createWriteStream, type WriteStream } from 'node:fs';
import { lstat, mkdir, readlink, stat, symlink } from 'node:fs/promises';
import { once } from 'node:events';
import { join, posix } from 'node:path';
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import * as tar from 'tar-stream';
import { BangerError, ErrorCode, errorMessage } from '../core/errors.js';
import { zstdDecompressor } from '../core/zstd.js';
import type { ProgressEvent } from '../core/operation.js';

/**
 * Streaming, defensive extraction of a kernel bundle (`tar.zst`) into an empty directory.
 *
 * The rule: a kernel bundle holds only regular files, directories and symlinks that stay
 * inside the bundle. Rejected with E_UNSAFE_ENTRY (naming the entry): absolute paths, paths
 * that escape after normalisation, paths that pass through a symlink, symlinks whose target is
 * absolute or resolves (following other symlinks) outside the bundle, hard links, character
 * and block devices, FIFOs, duplicate entries. Corrupt zstd or tar data is E_BUNDLE.
 * setuid/setgid/sticky and group/other write bits are dropped; nothing is chowned.
 *
 * The caller owns `dest` and removes it on failure.
 */

/** zstd `--long=27` bundles need a 128 MiB window; larger windows are refused (memory bound). */
export const ZSTD_WINDOW_LOG_MAX = 27;
/** Refuse bundles that expand beyond this (decompression bombs). */
export const DEFAULT_MAX_EXTRACT_BYTES = 8 * 1024 ** 3;

/** Refuse bundles with more entries than this (a real one has a few thousand modules at most). */
export const MAX_ENTRIES = 200_000;

export const BUNDLE_RULE = 'a kernel bundle may contain only regular files, directories and symlinks that stay inside the bundle';

export interface ExtractOptions {
  /**
   * The bundle (`tar.zst`): a file path (hashed while read, see `expectSha256`), or a stream
   * (the download itself, hashed by the downloader).
   */
  src: string | Readable;
  /** Compressed size, for progress when `src` is a stream. */
  total?: number;
  /** Empty directory to fill. */
  dest: string;
  /** Kernel name, for errors and progress. */
  label: string;
  /** When set, the bytes read from `src` must hash to this (re-check of a stored blob). */
  expectSha256?: string;
  maxBytes?: number;
  /** Default MAX_ENTRIES. */
  maxEntries?: number;
  signal?: AbortSignal;
  progress?: (ev: ProgressEvent) => void;
}

export interface ExtractResult {
  entries: number;
  /** Bytes written (uncompressed file contents). */
  bytes: number;
  /** sha256 of the compressed bytes read (file sources only). */
  sha256?: string;
}

/** Normalise a tar entry name to a relative POSIX path inside the bundle, or throw. "" = the root. */
export function normaliseEntryPath(name: string, label: string): string {
  if (name.includes('\0')) throw unsafe(label, name, 'contains a NUL byte');
  if (name.startsWith('/')) throw unsafe(label, name, 'is an absolute path');
  const n = posix.normalize(name).replace(/\/+$/, '');
  if (n === '.' || n === '') return '';
  if (n === '..' || n.startsWith('../')) throw unsafe(label, name, 'escapes the bundle directory');
  return n.replace(/^(\.\/)+/, '');
}

/** Lexical check of a symlink target: relative and, resolved from the link's directory, inside. */
export function checkSymlinkTarget(entry: string, target: string, label: string): void {
  if (!target) throw unsafe(label, entry, 'is a symlink with an empty target');
  if (target.startsWith('/')) throw unsafe(label, entry, `is a symlink to the absolute path '${target}'`);
  const resolved = posix.normalize(posix.join(posix.dirname(entry), target));
  if (resolved === '..' || resolved.startsWith('../')) throw unsafe(label, entry, `is a symlink whose target '${target}' escapes the bundle directory`);
}

/**
 * Physical check: resolve `rel` inside `root` component by component, following symlinks
 * (relative targets only), as the kernel would. False when a ".." climbs above `root`, an
 * absolute target appears, or there are more than 40 hops (a loop).
 */
export async function staysInside(root: string, rel: string): Promise<boolean> {
  const resolved: string[] = [];
  let pending = rel.split('/');
  let hops = 0;
  while (pending.length) {
    const c = pending.shift()!;
    if (c === '' || c === '.') continue;
    if (c === '..') {
      if (resolved.length === 0) return false;
      resolved.pop();
      continue;
    }
    const st = await lstat(join(root, ...resolved, c)).catch(() => undefined);
    if (st?.isSymbolicLink()) {
      if (++hops > 40) return false;
      const t = await readlink(join(root, ...resolved, c));
      if (t.startsWith('/')) return false;
      pending = [...t.split('/'), ...pending];
    } else resolved.push(c);
  }
  return true;
}

// biome-ignore lint/complexity/noExcessiveLinesPerFunction: one streaming pass (hash, decompress, untar, verify) whose stages share the stream state and the undo; the entry rules are already split out (extract rules)
export async function extractBundle(opts: ExtractOptions): Promise<ExtractResult> {
  const { label, dest, signal } = opts;
  const max = opts.maxBytes ?? DEFAULT_MAX_EXTRACT_BYTES;
  const maxEntries = opts.maxEntries ?? MAX_ENTRIES;
  const fromFile = typeof opts.src === 'string';
  const total = typeof opts.src === 'string' ? (await stat(opts.src)).size : opts.total;
  const hasher = new HashTap(fromFile ? createHash('sha256') : undefined);
  const src: Readable = typeof opts.src === 'string' ? createReadStream(opts.src) : opts.src;
  const srcName = typeof opts.src === 'string' ? opts.src : 'download';
  const zstd = zstdDecompressor(ZSTD_WINDOW_LOG_MAX);
  const extract = tar.extract();
  let failure: BangerError | undefined;
  const fail = (e: BangerError) => {
    failure ??= e;
    extract.destroy(failure);
  };
  src.on('error', (e) => fail(new BangerError(ErrorCode.Bundle, `kernel ${label}: cannot read bundle ${srcName}: ${errorMessage(e)}`, { cause: e })));
  zstd.on('error', (e) =>
    fail(
      new BangerError(ErrorCode.Bundle, `kernel ${label}: bundle is not valid zstd data: ${errorMessage(e)}`, {
        hint: 'the bundle must be a tar archive compressed with zstd (tar.zst)',
        cause: e,
      }),
    ),
  );
  const onAbort = () => fail(new BangerError(ErrorCode.Cancelled, `kernel ${label}: extraction cancelled`));
  signal?.addEventListener('abort', onAbort, { once: true });
  if (signal?.aborted) onAbort();
  src
    .pipe(hasher)
    .pipe(zstd)
    .pipe(extract as unknown as NodeJS.WritableStream);

  const knownDirs = new Set<string>(['']);
  const symlinks: string[] = [];
  const seen = new Set<string>();
  let entries = 0;
  let bytes = 0;
  /** The file being written, closed before we report a failure (so the caller can remove `dest`). */
  let current: WriteStream | undefined;
  let lastEmit = 0;
  opts.progress?.({ stage: 'extract', key: label, current: 0, total });
  try {
    for await (const entry of extract) {
      const h = entry.header;
      const type: string = h.type ?? 'file';
      if (type === 'pax-global-header') {
        entry.resume();
        continue;
      }
      const rel = normaliseEntryPath(h.name, label);
      if (++entries > maxEntries)
        throw new BangerError(ErrorCode.Bundle, `kernel ${label}: bundle has more than ${maxEntries} entries`, {
          hint: 'this is not a kernel bundle, or a broken one',
        });
      if (type === 'directory') {
        if (rel) await ensureDir(dest, rel, knownDirs, label, h.name);
        entry.resume();
        continue;
      }
      if (!rel) throw unsafe(label, h.name, 'names the bundle root but is not a directory');
      if (seen.has(rel) || knownDirs.has(rel)) throw unsafe(label, h.name, 'appears twice in the bundle');
      seen.add(rel);
      const parent = posix.dirname(rel) === '.' ? '' : posix.dirname(rel);
      if (type === 'file' || type === 'contiguous-file') {
        await ensureDir(dest, parent, knownDirs, label, h.name);
        const size = h.size ?? 0;
        if (bytes + size > max)
          throw new BangerError(ErrorCode.Bundle, `kernel ${label}: bundle expands beyond ${max} bytes (at entry '${h.name}')`, {
            hint: 'this is not a kernel bundle, or a broken one',
          });
        const mode = ((h.mode ?? 0o644) & 0o755) | 0o600;
        const out = (current = createWriteStream(join(dest, rel), { flags: 'wx', mode }));
        for await (const chunk of entry) {
          if (!out.write(chunk)) await once(out, 'drain');
        }
        out.end();
        await once(out, 'close');
        current = undefined;
        bytes += size;
      } else if (type === 'symlink') {
        await ensureDir(dest, parent, knownDirs, label, h.name);
        checkSymlinkTarget(rel, h.linkname ?? '', label);
        await symlink(h.linkname!, join(dest, rel));
        symlinks.push(rel);
        entry.resume();
      } else if (type === 'link') {
        throw unsafe(label, h.name, `is a hard link (to '${h.linkname}')`);
      } else if (type === 'character-device' || type === 'block-device') {
        throw unsafe(label, h.name, `is a ${type.replace('-', ' ')}`);
      } else if (type === 'fifo') {
        throw unsafe(label, h.name, 'is a FIFO');
      } else {
        throw unsafe(label, h.name, `has unsupported type '${type}'`);
      }
      const now = Date.now();
      if (now - lastEmit > 100) {
        lastEmit = now;
        opts.progress?.({ stage: 'extract', key: label, current: hasher.bytes, total });
      }
    }
    if (failure) throw failure;
    // tar-stream stops at the end-of-archive marker; make sure every compressed byte was read and hashed.
    if (!src.readableEnded) {
      src.resume();
      if (!src.destroyed) await once(src, 'close').catch(() => {});
    }
    if (failure) throw failure;
    for (const l of symlinks) {
      if (!(await staysInside(dest, l))) throw unsafe(label, l, `is a symlink that resolves outside the bundle directory (through other links)`);
    }
    const sha256 = hasher.hash?.digest('hex');
    if (fromFile && opts.expectSha256 && sha256 !== opts.expectSha256) {
      throw new BangerError(ErrorCode.Digest, `kernel ${label}: stored bundle ${srcName} does not match its sha256 ${opts.expectSha256} (got ${sha256})`, {
        hint: 'the cached copy was damaged; it has been removed, pull again to download it',
        details: { expected: opts.expectSha256, actual: sha256 },
      });
    }
    opts.progress?.({ stage: 'extract', key: label, message: `${entries} entries`, current: total, total, done: true });
    return { entries, bytes, sha256 };
  } catch (e) {
    const err = failure ?? toBundleError(e, label);
    src.destroy();
    zstd.destroy();
    extract.destroy();
    if (current) await closeStream(current);
    throw err;
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}

/** Destroy a file stream and wait until its descriptor is closed (an open still pending completes first). */
export async function closeStream(s: WriteStream): Promise<void> {
  if (s.closed) return;
  const closed = once(s, 'close').catch(() => {});
  s.destroy();
  await closed;
}

/** Create `rel` (and parents) as real directories; refuse to pass through symlinks or files. */
async function ensureDir(root: string, rel: string, known: Set<string>, label: string, entryName: string): Promise<void> {
  if (known.has(rel)) return;
  const parts = rel.split('/');
  let cur = '';
  for (const p of parts) {
    cur = cur ? `${cur}/${p}` : p;
    if (known.has(cur)) continue;
    const st = await lstat(join(root, cur)).catch(() => undefined);
    if (!st) await mkdir(join(root, cur), { mode: 0o755 });
    else if (st.isSymbolicLink()) throw unsafe(label, entryName, `passes through the symlink '${cur}'`);
    else if (!st.isDirectory()) throw unsafe(label, entryName, `needs '${cur}' to be a directory but it is a file`);
    known.add(cur);
  }
}

function unsafe(label: string, entry: string, why: string): BangerError {
  return new BangerError(ErrorCode.Unsafe, `kernel ${label}: unsafe bundle entry '${entry}': ${why}`, {
    hint: `${BUNDLE_RULE}; nothing was installed`,
    details: { entry },
  });
}

function toBundleError(e: unknown, label: string): BangerError {
  if (e instanceof BangerError) return e;
  const code = (e as NodeJS.ErrnoException)?.code;
  if (code === 'EEXIST')
    return new BangerError(ErrorCode.Unsafe, `kernel ${label}: unsafe bundle: an entry appears twice (${errorMessage(e)})`, { hint: BUNDLE_RULE, cause: e });
  if (code && /^E[A-Z]+$/.test(code))
    return new BangerError(ErrorCode.Bundle, `kernel ${label}: extracting the bundle failed: ${errorMessage(e)}`, { cause: e });
  return new BangerError(ErrorCode.Bundle, `kernel ${label}: bundle is not a valid tar archive: ${errorMessage(e)}`, {
    hint: 'the bundle must be a tar archive compressed with zstd (tar.zst)',
    cause: e,
  });
}

/** Pass-through stream that hashes and counts the bytes flowing through it. */
class HashTap extends Transform {
  bytes = 0;
  constructor(readonly hash?: Hash) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash?.update(chunk);
    this.bytes += chunk.length;
    cb(null, chunk);
  }
}

/** What a bundle directory holds, checked after extraction. */
export interface BundleFiles {
  vmlinux?: string;
  vmlinuz?: string;
  initrd?: string;
  modulesDir?: string;
}

/** Regular files/dirs at the top level of `dir` (symlinks resolved inside). `vmlinux` required when `requireVmlinux`. */
export async function inspectKernelDir(dir: string, label: string, requireVmlinux: boolean): Promise<BundleFiles> {
  const file = async (n: string) => {
    const st = await stat(join(dir, n)).catch(() => undefined);
    if (st && !st.isFile())
      throw new BangerError(ErrorCode.Bundle, `kernel ${label}: '${n}' in the bundle is not a regular file`, {
        hint: 'a kernel bundle has vmlinux (and optionally initrd.img) as files at its top level',
      });
    return st ? join(dir, n) : undefined;
  };
  const out: BundleFiles = { vmlinux: await file(KERNEL_FILES.vmlinux), vmlinuz: await file(KERNEL_FILES.vmlinuz), initrd: await file(KERNEL_FILES.initrd) };
  const mod = await stat(join(dir, 'modules')).catch(() => undefined);
  if (mod?.isDirectory()) out.modulesDir = join(dir, 'modules');
  if (requireVmlinux && !out.vmlinux) {
    throw new BangerError(ErrorCode.Bundle, `kernel ${label}: the bundle has no 'vmlinux' at its top level`, {
      hint: 'a kernel bundle is a tar.zst with vmlinux at the top level, optionally initrd.img and modules/',
    });
  }
  return out;
}
