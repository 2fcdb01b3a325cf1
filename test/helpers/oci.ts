import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync, zstdCompressSync } from 'node:zlib';

/**
 * Builders for synthetic OCI images: a small tar writer (ustar + PAX with raw byte values,
 * so tests can craft whiteouts, traversal entries, binary xattrs and long names exactly),
 * GNU tar over a staged directory, and OCI layouts (single image or multi-platform index)
 * that skopeo pushes into the test registry.
 */
export interface TEntry {
  path: string;
  type?: 'file' | 'dir' | 'symlink' | 'link' | 'char' | 'block' | 'fifo';
  data?: Buffer | string;
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: number;
  linkpath?: string;
  devmajor?: number;
  devminor?: number;
  xattrs?: Record<string, Buffer>;
}

const TYPEFLAG = { file: '0', link: '1', symlink: '2', char: '3', block: '4', dir: '5', fifo: '6' } as const;

function octal(n: number, len: number): string {
  return n.toString(8).padStart(len - 1, '0') + '\0';
}

function header(name: string, typeflag: string, size: number, e: TEntry): Buffer {
  const h = Buffer.alloc(512);
  h.write(name.slice(0, 100), 0, 'utf8');
  h.write(octal(e.mode ?? (typeflag === '5' ? 0o755 : 0o644), 8), 100, 'ascii');
  h.write(octal(e.uid ?? 0, 8), 108, 'ascii');
  h.write(octal(e.gid ?? 0, 8), 116, 'ascii');
  h.write(octal(size, 12), 124, 'ascii');
  h.write(octal(e.mtime ?? 1_700_000_000, 12), 136, 'ascii');
  h.write('        ', 148, 'ascii');
  h.write(typeflag, 156, 'ascii');
  h.write((e.linkpath ?? '').slice(0, 100), 157, 'utf8');
  h.write('ustar\0', 257, 'ascii');
  h.write('00', 263, 'ascii');
  h.write(octal(e.devmajor ?? 0, 8), 329, 'ascii');
  h.write(octal(e.devminor ?? 0, 8), 337, 'ascii');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(octal(sum, 7) + ' ', 148, 'ascii');
  return h;
}

function pad(b: Buffer): Buffer {
  const r = b.length % 512;
  return r ? Buffer.concat([b, Buffer.alloc(512 - r)]) : b;
}

function paxRecord(key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`), value, Buffer.from('\n')]);
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return Buffer.concat([Buffer.from(String(len)), body]);
}

/** Write a tar archive from entries (PAX headers for long names and xattrs). */
export function makeTar(entries: TEntry[]): Buffer {
  const out: Buffer[] = [];
  for (const e of entries) {
    const type = e.type ?? 'file';
    const data = type === 'file' ? Buffer.from(e.data ?? '') : Buffer.alloc(0);
    const pax: Buffer[] = [];
    if (Buffer.byteLength(e.path) > 100) pax.push(paxRecord('path', Buffer.from(e.path)));
    if (e.linkpath && Buffer.byteLength(e.linkpath) > 100) pax.push(paxRecord('linkpath', Buffer.from(e.linkpath)));
    for (const [k, v] of Object.entries(e.xattrs ?? {})) pax.push(paxRecord(`SCHILY.xattr.${k}`, v));
    if (pax.length) {
      const body = Buffer.concat(pax);
      out.push(header('PaxHeaders/x', 'x', body.length, {} as TEntry), pad(body));
    }
    out.push(header(e.path, TYPEFLAG[type], data.length, e), pad(data));
  }
  out.push(Buffer.alloc(1024));
  return Buffer.concat(out);
}

/** GNU tar (posix format, xattrs, numeric owners) of everything under `dir`, sorted. */
export function gnuTar(dir: string): Buffer {
  const r = spawnSync('tar', ['--create', '--format=posix', '--xattrs', '--xattrs-include=*', '--numeric-owner', '--sort=name', '-C', dir, '.'], {
    maxBuffer: 1 << 30,
    env: { ...process.env, LC_ALL: 'C' },
  });
  if (r.status !== 0) throw new Error(`tar failed: ${r.stderr}`);
  return r.stdout;
}

export type Compression = 'gzip' | 'zstd' | 'none';

export const LAYER_MEDIA: Record<Compression, string> = {
  gzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  zstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  none: 'application/vnd.oci.image.layer.v1.tar',
};

export function digestOf(b: Buffer): string {
  return 'sha256:' + createHash('sha256').update(b).digest('hex');
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: { os: string; architecture: string; variant?: string };
}

/** An OCI image layout being assembled in `dir` (blobs/sha256, oci-layout, index.json). */
export class OciLayout {
  private refs: { desc: Descriptor; tag: string }[] = [];
  constructor(readonly dir: string) {
    mkdirSync(join(dir, 'blobs', 'sha256'), { recursive: true });
    writeFileSync(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  }

  blob(data: Buffer, mediaType: string): Descriptor {
    const digest = digestOf(data);
    writeFileSync(join(this.dir, 'blobs', 'sha256', digest.slice(7)), data);
    return { mediaType, digest, size: data.length };
  }

  layer(tar: Buffer, compression: Compression = 'gzip'): Descriptor {
    const data = compression === 'gzip' ? gzipSync(tar) : compression === 'zstd' ? zstdCompressSync(tar) : tar;
    return this.blob(data, LAYER_MEDIA[compression]);
  }

  /** An image manifest over `layers` (tars or prepared descriptors). */
  image(
    layers: Descriptor[],
    opts: { diffIds?: string[]; architecture?: string; os?: string; variant?: string; config?: Record<string, unknown>; layerMediaOverride?: string } = {},
  ): Descriptor {
    const cfg = {
      architecture: opts.architecture ?? 'amd64',
      os: opts.os ?? 'linux',
      ...(opts.variant ? { variant: opts.variant } : {}),
      config: opts.config ?? { Env: ['PATH=/usr/bin:/bin'], Cmd: ['/bin/sh'] },
      rootfs: { type: 'layers', diff_ids: opts.diffIds ?? layers.map((l) => l.digest) },
    };
    const config = this.blob(Buffer.from(JSON.stringify(cfg)), 'application/vnd.oci.image.config.v1+json');
    const manifest = {
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config,
      layers: layers.map((l) => ({ ...l, mediaType: opts.layerMediaOverride ?? l.mediaType })),
    };
    const d = this.blob(Buffer.from(JSON.stringify(manifest)), 'application/vnd.oci.image.manifest.v1+json');
    return { ...d, platform: { os: cfg.os, architecture: cfg.architecture, ...(opts.variant ? { variant: opts.variant } : {}) } };
  }

  index(manifests: Descriptor[]): Descriptor {
    const idx = { schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests };
    return this.blob(Buffer.from(JSON.stringify(idx)), 'application/vnd.oci.image.index.v1+json');
  }

  /** Name `desc` as `tag` in index.json (what `oci:DIR:TAG` resolves). */
  tag(desc: Descriptor, tag: string): void {
    this.refs = this.refs.filter((r) => r.tag !== tag);
    this.refs.push({ desc, tag });
    const index = {
      schemaVersion: 2,
      manifests: this.refs.map((r) => ({
        mediaType: r.desc.mediaType,
        digest: r.desc.digest,
        size: r.desc.size,
        annotations: { 'org.opencontainers.image.ref.name': r.tag },
      })),
    };
    writeFileSync(join(this.dir, 'index.json'), JSON.stringify(index));
  }
}
