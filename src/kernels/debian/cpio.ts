/**
 * A tiny writer for the "newc" cpio format the kernel unpacks as an initramfs
 * (Documentation/driver-api/early-userspace/buffer-format.rst). Building the archive in memory
 * lets us add device nodes (/dev/console) and set owners without root or a cpio binary.
 */

export type CpioEntry =
  | { type: 'dir'; path: string; mode?: number }
  | { type: 'file'; path: string; data: Buffer; mode?: number }
  | { type: 'symlink'; path: string; target: string }
  | { type: 'char'; path: string; major: number; minor: number; mode?: number };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

function hex8(n: number): string {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new RangeError(`cpio field out of range: ${n}`);
  return n.toString(16).padStart(8, '0');
}

function pad4(len: number): Buffer {
  return Buffer.alloc((4 - (len % 4)) % 4);
}

function header(ino: number, mode: number, nlink: number, size: number, name: string, rdevMajor = 0, rdevMinor = 0): Buffer {
  const nameBuf = Buffer.from(name + '\0', 'utf8');
  const fields = [ino, mode, 0, 0, nlink, 0, size, 0, 0, rdevMajor, rdevMinor, nameBuf.length, 0];
  const h = Buffer.from('070701' + fields.map(hex8).join(''), 'latin1');
  return Buffer.concat([h, nameBuf, pad4(h.length + nameBuf.length)]);
}

/** Serialize entries (paths without a leading slash; parents before children) into a newc archive. */
export function writeCpio(entries: CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  for (const e of entries) {
    const path = e.path.replace(/^\/+/, '');
    if (!path || path.split('/').includes('..')) throw new Error(`cpio: unsafe path '${e.path}'`);
    let data: Buffer = Buffer.alloc(0);
    let mode: number;
    let major = 0;
    let minor = 0;
    switch (e.type) {
      case 'dir':
        mode = S_IFDIR | (e.mode ?? 0o755);
        break;
      case 'file':
        mode = S_IFREG | (e.mode ?? 0o644);
        data = e.data;
        break;
      case 'symlink':
        mode = S_IFLNK | 0o777;
        data = Buffer.from(e.target, 'utf8');
        break;
      case 'char':
        mode = S_IFCHR | (e.mode ?? 0o600);
        major = e.major;
        minor = e.minor;
        break;
    }
    parts.push(header(ino++, mode, e.type === 'dir' ? 2 : 1, data.length, path, major, minor), data, pad4(data.length));
  }
  parts.push(header(0, 0, 1, 0, 'TRAILER!!!'));
  return Buffer.concat(parts);
}
