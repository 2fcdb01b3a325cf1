import { createReadStream } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { isAbsolute } from 'node:path';
import { BangerError, ErrorCode } from '../core/errors.js';
import { toolEnv } from '../core/exec.js';
import { sha256File } from '../core/fsutil.js';
import type { ImageBase, OpContext } from './image-base.js';
import { applyTarStream } from './layers.js';
import { buildImage } from './pipeline.js';
import type { ImageRecord } from './record.js';
import type { Compression } from './registry/manifest.js';

export interface ImportParams {
  name: string;
  rootfsTar?: string;
  rootfsDir?: string;
  kernelRef?: string;
  sizeBytes?: number;
}

/** `banger image import NAME (--rootfs-tar PATH | --rootfs-dir PATH)`. */
export async function importImage(ib: ImageBase, p: ImportParams, op: OpContext = {}): Promise<ImageRecord> {
  const signal = op.signal ?? new AbortController().signal;
  if (!!p.rootfsTar === !!p.rootfsDir) throw new BangerError(ErrorCode.Invalid, 'give exactly one of --rootfs-tar or --rootfs-dir');
  const field = p.rootfsTar ? '--rootfs-tar' : '--rootfs-dir';
  const src = (p.rootfsTar ?? p.rootfsDir)!;
  if (!isAbsolute(src)) throw new BangerError(ErrorCode.Invalid, `${field} '${src}' must be an absolute path`);
  const st = await stat(src).catch(() => undefined);
  if (!st) throw new BangerError(ErrorCode.NotFound, `${field} '${src}' does not exist`);
  if (p.rootfsTar && !st.isFile()) throw new BangerError(ErrorCode.Invalid, `${field} '${src}' is not a file`);
  if (p.rootfsDir && !st.isDirectory()) throw new BangerError(ErrorCode.Invalid, `${field} '${src}' is not a directory`);
  const kernelRef = await ib.checkKernel(p.kernelRef);
  ib.reserveCheck(p.name);
  const digest = p.rootfsTar ? 'sha256:' + (await sha256File(src)) : '';
  return buildImage(
    ib,
    {
      name: p.name,
      sourceRef: `${p.rootfsTar ? 'tar' : 'dir'}:${src}`,
      digest,
      platform: 'linux/amd64',
      config: { env: [], entrypoint: [], cmd: [], user: '', workdir: '' },
      kernelRef,
      fromRegistry: false,
      sizeBytes: p.sizeBytes,
      estimateBytes: p.rootfsTar ? st.size * ((await sniffCompression(src)) === 'none' ? 1.1 : 4) + 64 * 1024 * 1024 : undefined,
      blobs: () => [],
      fill: async (root, applier) => {
        if (p.rootfsTar) {
          applier.beginLayer(`--rootfs-tar ${src}`);
          await applyTarStream(createReadStream(src, { highWaterMark: 1024 * 1024 }), await sniffCompression(src), applier, signal);
        } else {
          await ib.ctx.exec(['cp', '-a', '--reflink=auto', '--', `${src}/.`, `${root}/`], { env: toolEnv(), signal });
        }
      },
    },
    op,
  );
}

async function sniffCompression(path: string): Promise<Compression> {
  const fh = await open(path, 'r');
  try {
    const b = Buffer.alloc(4);
    await fh.read(b, 0, 4, 0);
    if (b[0] === 0x1f && b[1] === 0x8b) return 'gzip';
    if (b.readUInt32LE(0) === 0xfd2fb528) return 'zstd';
    return 'none';
  } finally {
    await fh.close();
  }
}
