import { BangerError, ErrorCode } from './errors.js';

/**
 * A streaming tar reader that keeps everything a root filesystem needs: ustar, GNU
 * long names/links ('L'/'K'), PAX extended and global headers with values kept as raw bytes
 * (binary xattrs such as security.capability survive), base-256 numbers, device numbers.
 *
 * Push-based: `push(chunk)` parses as far as it can and calls `onEntry` for every header;
 * the entry's data goes to the returned sink (or is skipped). `end()` checks the archive did
 * not stop in the middle of an entry. Errors are E_INVALID naming the entry.
 *
 * Memory is bounded whatever the input: besides the current header block, the reader holds only
 * metadata records (PAX 'x'/'g', GNU 'L'/'K'), at most `maxMetaBytes` of them pending before
 * one entry and as much again of global PAX records; entry data is streamed to the sink.
 * Image layers use it (src/images/layers.ts), and so do copies out of a guest, `vm cp` and
 * the SDK's copyOut (src/transfer/extract.ts), with a smaller bound.
 */
export type EntryType = 'file' | 'link' | 'symlink' | 'char' | 'block' | 'dir' | 'fifo';

export interface TarEntry {
  /** Path as stored (PAX `path` > GNU long name > prefix/name), no normalisation. */
  path: string;
  type: EntryType;
  /** Target of a symlink or hard link. */
  linkpath: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  /** Seconds since the epoch (fractional from PAX). */
  mtime: number;
  devmajor: number;
  devminor: number;
  /** Extended attributes from PAX `SCHILY.xattr.*` (raw bytes) and `LIBARCHIVE.xattr.*` (base64). */
  xattrs: Map<string, Buffer>;
}

export interface EntrySink {
  write(chunk: Buffer): void;
  end(): void;
}

export type EntryHandler = (e: TarEntry) => EntrySink | undefined | Promise<EntrySink | undefined>;

const BLOCK = 512;

export interface TarReaderOptions {
  /** Most bytes of metadata records (PAX, GNU long names) held at once before an entry; default 16 MiB. */
  maxMetaBytes?: number;
}

/** Parse a numeric header field: octal text, or base-256 when the high bit is set. */
export function parseNumeric(buf: Buffer, field: string): number {
  if (buf.length && buf[0]! & 0x80) {
    if (buf[0] === 0xff) throw new Error(`negative base-256 value in ${field}`);
    let v = buf[0]! & 0x7f;
    for (let i = 1; i < buf.length; i++) v = v * 256 + buf[i]!;
    return v;
  }
  let s = '';
  for (const b of buf) {
    if (b === 0 || b === 0x20) {
      if (s) break;
      continue;
    }
    s += String.fromCharCode(b);
  }
  if (!s) return 0;
  if (!/^[0-7]+$/.test(s)) throw new Error(`bad octal '${s}' in ${field}`);
  return parseInt(s, 8);
}

function cstr(buf: Buffer): string {
  const z = buf.indexOf(0);
  return (z < 0 ? buf : buf.subarray(0, z)).toString('utf8');
}

/** Decode PAX records ("LEN key=value\n") keeping values as raw bytes. */
export function parsePax(data: Buffer): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  let i = 0;
  while (i < data.length) {
    if (data[i] === 0) break;
    const sp = data.indexOf(0x20, i);
    if (sp < 0) throw new Error('malformed PAX record (no length)');
    const len = Number(data.subarray(i, sp).toString('ascii'));
    if (!Number.isInteger(len) || len <= 0 || i + len > data.length) throw new Error('malformed PAX record length');
    const rec = data.subarray(sp + 1, i + len - 1); // drop trailing \n
    const eq = rec.indexOf(0x3d);
    if (eq < 0) throw new Error('malformed PAX record (no =)');
    out.set(rec.subarray(0, eq).toString('utf8'), Buffer.from(rec.subarray(eq + 1)));
    i += len;
  }
  return out;
}

const TYPES: Record<string, EntryType> = {
  '0': 'file',
  '\0': 'file',
  '7': 'file',
  '1': 'link',
  '2': 'symlink',
  '3': 'char',
  '4': 'block',
  '5': 'dir',
  '6': 'fifo',
};

export class TarReader {
  private buf: Buffer[] = [];
  private buffered = 0;
  private state: 'header' | 'data' | 'meta' | 'pad' | 'eof' = 'header';
  private remaining = 0;
  private pad = 0;
  private sink?: EntrySink;
  private metaType = '';
  private metaChunks: Buffer[] = [];
  private pax = new Map<string, Buffer>();
  private globalPax = new Map<string, Buffer>();
  private longName?: string;
  private longLink?: string;
  private current = '';
  private zeroBlocks = 0;
  /** Bytes of metadata records read since the last entry, and of global PAX records in all. */
  private metaBytes = 0;
  private globalBytes = 0;
  private readonly maxMeta: number;
  /** Number of entries seen (for messages). */
  entries = 0;

  constructor(
    private readonly onEntry: EntryHandler,
    opts: TarReaderOptions = {},
  ) {
    this.maxMeta = opts.maxMetaBytes ?? 16 * 1024 * 1024;
  }

  private take(n: number): Buffer {
    // caller guarantees buffered >= n
    if (this.buf[0]!.length >= n) {
      const first = this.buf[0]!;
      const out = first.subarray(0, n);
      if (first.length === n) this.buf.shift();
      else this.buf[0] = first.subarray(n);
      this.buffered -= n;
      return out;
    }
    const all = Buffer.concat(this.buf);
    this.buf = all.length > n ? [all.subarray(n)] : [];
    this.buffered -= n;
    return all.subarray(0, n);
  }

  /** Take up to n bytes without copying (for streaming entry data). */
  private takeUpTo(n: number): Buffer {
    const first = this.buf[0]!;
    if (first.length <= n) {
      this.buf.shift();
      this.buffered -= first.length;
      return first;
    }
    this.buf[0] = first.subarray(n);
    this.buffered -= n;
    return first.subarray(0, n);
  }

  private fail(msg: string): never {
    throw new BangerError(ErrorCode.Invalid, `tar: ${msg}${this.current ? ` (entry '${this.current}')` : ''}`);
  }

  async push(chunk: Buffer): Promise<void> {
    if (chunk.length === 0) return;
    this.buf.push(chunk);
    this.buffered += chunk.length;
    while (this.buffered > 0) {
      switch (this.state) {
        case 'eof':
          // trailing data after the end marker is ignored (padding to a record size)
          this.buf = [];
          this.buffered = 0;
          return;
        case 'data': {
          const part = this.takeUpTo(this.remaining);
          this.remaining -= part.length;
          this.sink?.write(part);
          if (this.remaining === 0) this.finishData();
          break;
        }
        case 'meta': {
          const part = this.takeUpTo(this.remaining);
          this.remaining -= part.length;
          this.metaChunks.push(Buffer.from(part));
          if (this.remaining === 0) this.finishMeta();
          break;
        }
        case 'pad': {
          const n = Math.min(this.pad, this.buffered);
          this.take(n);
          this.pad -= n;
          if (this.pad === 0) this.state = 'header';
          break;
        }
        case 'header': {
          if (this.buffered < BLOCK) return;
          await this.header(this.take(BLOCK));
          break;
        }
      }
    }
  }

  private finishData(): void {
    this.sink?.end();
    this.sink = undefined;
    this.startPad();
  }

  private startPad(): void {
    const size = this.lastSize;
    this.pad = (BLOCK - (size % BLOCK)) % BLOCK;
    this.state = this.pad ? 'pad' : 'header';
  }
  private lastSize = 0;

  private finishMeta(): void {
    const data = Buffer.concat(this.metaChunks);
    this.metaChunks = [];
    try {
      if (this.metaType === 'x') for (const [k, v] of parsePax(data)) this.pax.set(k, v);
      else if (this.metaType === 'g') for (const [k, v] of parsePax(data)) this.globalPax.set(k, v);
      else if (this.metaType === 'L') this.longName = cstr(data);
      else if (this.metaType === 'K') this.longLink = cstr(data);
    } catch (e) {
      this.fail((e as Error).message);
    }
    this.startPad();
  }

  private async header(h: Buffer): Promise<void> {
    if (h.every((b) => b === 0)) {
      if (++this.zeroBlocks >= 2) this.state = 'eof';
      return;
    }
    this.zeroBlocks = 0;
    let sum = 0;
    for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i]!;
    let stored: number;
    try {
      stored = parseNumeric(h.subarray(148, 156), 'chksum');
    } catch {
      this.fail('bad header checksum field');
    }
    if (stored !== sum) this.fail(`header checksum mismatch after ${this.entries} entries (corrupt or not a tar stream)`);
    const typeflag = String.fromCharCode(h[156]!);
    let size: number;
    try {
      size = parseNumeric(h.subarray(124, 136), 'size');
    } catch (e) {
      this.fail((e as Error).message);
    }
    this.lastSize = size;
    if (typeflag === 'x' || typeflag === 'g' || typeflag === 'L' || typeflag === 'K') {
      if (size > this.maxMeta) this.fail(`extended header of ${size} bytes is too large (limit ${this.maxMeta})`);
      if (typeflag === 'g') {
        this.globalBytes += size;
        if (this.globalBytes > this.maxMeta) this.fail(`global PAX headers take more than ${this.maxMeta} bytes`);
      } else {
        this.metaBytes += size;
        if (this.metaBytes > this.maxMeta) this.fail(`extended headers before one entry take more than ${this.maxMeta} bytes`);
      }
      this.metaType = typeflag;
      this.remaining = size;
      this.state = size ? 'meta' : 'header';
      if (!size) this.finishMeta();
      return;
    }
    const type = TYPES[typeflag];
    const name = cstr(h.subarray(0, 100));
    const magic = h.subarray(257, 263).toString('latin1');
    const prefix = magic.startsWith('ustar') && magic === 'ustar\0' ? cstr(h.subarray(345, 500)) : '';
    const pax = new Map([...this.globalPax, ...this.pax]);
    this.pax = new Map();
    const paxStr = (k: string) => pax.get(k)?.toString('utf8');
    const path = paxStr('path') ?? this.longName ?? (prefix ? `${prefix}/${name}` : name);
    this.current = path;
    const linkpath = paxStr('linkpath') ?? this.longLink ?? cstr(h.subarray(157, 257));
    this.longName = this.longLink = undefined;
    this.metaBytes = 0;
    if (!type) this.fail(`unsupported entry type '${typeflag === '\0' ? '\\0' : typeflag}'${typeflag === 'S' ? ' (GNU sparse file)' : ''}`);
    const num = (field: string, off: number, len: number, paxKey?: string): number => {
      const pv = paxKey ? paxStr(paxKey) : undefined;
      if (pv !== undefined) {
        const v = Number(pv);
        if (!Number.isFinite(v)) this.fail(`bad PAX ${paxKey} '${pv}'`);
        // owners and sizes are whole numbers a kernel accepts (mtime may be fractional or negative)
        if (paxKey !== 'mtime' && (!Number.isSafeInteger(v) || v < 0 || (paxKey !== 'size' && v > 0xfffffffe))) this.fail(`bad PAX ${paxKey} '${pv}'`);
        return v;
      }
      try {
        return parseNumeric(h.subarray(off, off + len), field);
      } catch (e) {
        this.fail((e as Error).message);
      }
    };
    if (pax.has('size')) size = num('size', 124, 12, 'size');
    this.lastSize = size;
    const xattrs = new Map<string, Buffer>();
    for (const [k, v] of pax) {
      if (k.startsWith('SCHILY.xattr.')) xattrs.set(k.slice('SCHILY.xattr.'.length), v);
      else if (k.startsWith('LIBARCHIVE.xattr.'))
        xattrs.set(decodeURIComponent(k.slice('LIBARCHIVE.xattr.'.length)), Buffer.from(v.toString('ascii'), 'base64'));
    }
    const entry: TarEntry = {
      path,
      type,
      linkpath,
      mode: num('mode', 100, 8) & 0o7777,
      uid: num('uid', 108, 8, 'uid'),
      gid: num('gid', 116, 8, 'gid'),
      size: type === 'file' ? size : 0,
      mtime: num('mtime', 136, 12, 'mtime'),
      devmajor: type === 'char' || type === 'block' ? num('devmajor', 329, 8) : 0,
      devminor: type === 'char' || type === 'block' ? num('devminor', 337, 8) : 0,
      xattrs,
    };
    this.entries++;
    const r = this.onEntry(entry);
    this.sink = r instanceof Promise ? await r : r;
    // Hard links etc. may carry a size in odd archives: skip such data.
    this.remaining = size;
    if (size > 0) this.state = 'data';
    else this.finishData();
  }

  /** Call when the input ended. Throws if the archive stopped inside an entry. */
  end(): void {
    if (this.state === 'data' || this.state === 'meta' || (this.state === 'header' && this.buffered > 0)) {
      this.fail(`archive is truncated (${this.remaining || this.buffered} bytes missing or incomplete header)`);
    }
    this.sink = undefined;
  }
}
