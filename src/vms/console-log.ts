import { fstatSync, ftruncateSync, readSync, writeSync } from 'node:fs';
import { open, readFile, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { tempSibling, writeFileAtomic } from '../core/fsutil.js';
import { KeyedLock } from '../core/lock.js';
import { consoleFiles, type ConsoleFiles } from './files.js';

/**
 * The serial console log on disk: capped, rotated, read by offsets that survive rotation.
 *
 * The VMM writes `console.log` itself, opened with O_APPEND (QEMU `-chardev file,append=on`,
 * Firecracker's stdout opened 'a' by banger), so it keeps writing while the daemon is away
 * (VMMs outlive bangerd) and nothing the guest prints is lost then. When the file passes the
 * cap, `rotateIfOver` (run by the daemon's ConsoleRotator) copies its newest `cap` bytes to
 * `console.log.1` and truncates `console.log` to 0 in place ("copytruncate"; safe because the
 * writer appends: its next write lands at the new end, 0). What arrives while the copy runs is
 * copied too, up to another `cap` bytes; only what the guest writes between the last copy and
 * the truncate (microseconds), or beyond that bound by a guest writing faster than the disk
 * copies, is lost.
 *
 * Offsets: every byte of a boot's console has one offset that never changes, counted from the
 * boot's start. `console.log.start` holds the offset of `console.log`'s first byte (0 until the
 * first rotation); `console.log.1` holds the bytes just before it. A reader (`vm logs -f`,
 * readiness) asks from its offset and follows across rotations; an offset that fell out of
 * both files resumes at the oldest byte kept, one past the end (a new boot) starts over.
 *
 * Every read and rotation of one console takes an in-process lock (the daemon is the only
 * reader and rotator), so a read never sees a half-done rotation.
 */
const locks = new KeyedLock();

/** Read at most this much per call by default (one `vm logs` RPC answer). */
export const READ_CHUNK = 1 << 20;

interface Extent {
  /** Offset of console.log's first byte. */
  base: number;
  live: number;
  rotated: number;
}

async function sizeOf(path: string): Promise<number> {
  return (await stat(path).catch(() => undefined))?.size ?? 0;
}

async function readBase(f: ConsoleFiles): Promise<number> {
  const t = await readFile(f.start, 'utf8').catch(() => '0');
  const n = Number(t.trim());
  return Number.isSafeInteger(n) && n >= 0 ? n : 0;
}

async function extent(f: ConsoleFiles): Promise<Extent> {
  const base = await readBase(f);
  const [live, rotated] = await Promise.all([sizeOf(f.live), base > 0 ? sizeOf(f.rotated) : 0]);
  return { base, live, rotated: Math.min(rotated, base) };
}

/** Bytes [pos, pos+len) of `path` (short at its end); a missing file reads as empty. */
async function readAt(path: string, pos: number, len: number): Promise<Buffer> {
  let fh: FileHandle;
  try {
    fh = await open(path, 'r');
  } catch {
    return Buffer.alloc(0);
  }
  try {
    const buf = Buffer.alloc(len);
    const { bytesRead } = await fh.read(buf, 0, len, pos);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/** How many bytes at the end of `b` start a UTF-8 character that is not complete in `b`. */
function partialUtf8Tail(b: Buffer): number {
  for (let i = 1; i <= Math.min(3, b.length); i++) {
    const c = b[b.length - i]!;
    if ((c & 0xc0) === 0x80) continue; // continuation byte: look further back
    const need = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
    return need > i ? i : 0;
  }
  return 0;
}

export interface ConsoleChunk {
  data: Buffer;
  /** The offset to ask for next. */
  offset: number;
  /** The oldest offset still kept, and one past the newest byte. */
  start: number;
  end: number;
}

/**
 * Console bytes from `offset` on (at most `max`), across rotation (see above). When the read
 * stops short of the end, a UTF-8 character cut at the boundary is left for the next read.
 */
export async function readConsoleBytes(live: string, offset: number, max = READ_CHUNK): Promise<ConsoleChunk> {
  const f = consoleFiles(live);
  return locks.run(f.live, async () => {
    const x = await extent(f);
    const start = x.base - x.rotated;
    const end = x.base + x.live;
    let from = offset > end ? start : Math.max(offset, start); // past the end: a new boot, start over
    let data: Buffer;
    if (from < x.base) data = await readAt(f.rotated, from - start, Math.min(max, x.base - from));
    else data = await readAt(f.live, from - x.base, Math.min(max, end - from));
    if (data.length === max) data = data.subarray(0, data.length - partialUtf8Tail(data));
    if (data.length === 0 && from < x.base) from = x.base; // the rotated file shrank under us: go on with the live one
    return { data, offset: from + data.length, start, end };
  });
}

/** Console text from `offset` on (see readConsoleBytes); a missing console reads as empty. */
export async function readFrom(live: string, offset: number, max = READ_CHUNK): Promise<{ data: string; offset: number; start: number; end: number }> {
  const r = await readConsoleBytes(live, offset, max);
  return { data: r.data.toString('utf8'), offset: r.offset, start: r.start, end: r.end };
}

/** One past the newest byte of the console (0 when there is none). */
export async function consoleEnd(live: string): Promise<number> {
  const f = consoleFiles(live);
  return locks.run(f.live, async () => {
    const x = await extent(f);
    return x.base + x.live;
  });
}

/** Remove a console and its rotation (a VM about to boot starts a new one at offset 0). */
export async function removeConsole(live: string): Promise<void> {
  const f = consoleFiles(live);
  await locks.run(f.live, async () => {
    await Promise.all([rm(f.live, { force: true }), rm(f.rotated, { force: true }), rm(f.start, { force: true })]);
  });
}

/** What is copied synchronously right before the truncate, at most. */
const SYNC_TAIL = 256 * 1024;

/**
 * Rotate `live` when it holds more than `cap` bytes: its newest `cap` bytes (plus what arrives
 * while copying, up to another `cap`) become console.log.1, console.log is truncated to 0, and
 * console.log.start moves past everything it held. Returns the bytes the live file held (0: no
 * rotation). A missing console is no error.
 */
export async function rotateIfOver(live: string, cap: number): Promise<number> {
  const f = consoleFiles(live);
  return locks.run(f.live, async () => {
    let fh: FileHandle;
    try {
      fh = await open(f.live, 'r+');
    } catch {
      return 0;
    }
    const tmp = tempSibling(f.rotated);
    try {
      let size = (await fh.stat()).size;
      if (size <= cap) return 0;
      const out = await open(tmp, 'w', 0o640);
      try {
        let pos = size - cap;
        const buf = Buffer.alloc(Math.min(cap, 4 << 20));
        const copyTo = async (to: number) => {
          while (pos < to) {
            const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, to - pos), pos);
            if (!bytesRead) break;
            await out.write(buf, 0, bytesRead);
            pos += bytesRead;
          }
        };
        await copyTo(size);
        // What the guest wrote meanwhile (up to another cap): asynchronously while there is a
        // lot, then the last bit and the truncate synchronously, so nothing runs between the
        // last look at the size and the truncate (the only window where output is lost).
        const limit = size + cap;
        for (;;) {
          const now = Math.min((await fh.stat()).size, limit);
          if (now - size <= SYNC_TAIL) break;
          await copyTo(now);
          size = now;
        }
        for (let i = 0; i < 4; i++) {
          const now = Math.min(fstatSync(fh.fd).size, limit, size + Math.min(SYNC_TAIL, buf.length));
          if (now <= size) break;
          const n = readSync(fh.fd, buf, 0, now - size, size);
          if (!n) break;
          writeSync(out.fd, buf, 0, n);
          size += n;
        }
        ftruncateSync(fh.fd, 0);
      } finally {
        await out.close();
      }
      const base = await readBase(f);
      await rename(tmp, f.rotated);
      await writeFileAtomic(f.start, `${base + size}\n`, 0o640);
      return size;
    } catch (e) {
      await rm(tmp, { force: true });
      throw e;
    } finally {
      await fh.close();
    }
  });
}
