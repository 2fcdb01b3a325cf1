import { createHash, randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, openSync, writeSync } from 'node:fs';
import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Layout } from '../core/paths.js';
import { verifyBlob } from './registry/client.js';
import type { Descriptor } from './registry/manifest.js';

/**
 * The content store: blobs by sha256 under `layout.blobs`. A blob appears only after its
 * size and digest were verified (written to `<hex>.<rand>.tmp`, then renamed). Downloads of
 * one digest are serialised in-process (`withLock`), so concurrent pulls that share a layer
 * download it once: the second waiter finds the blob present.
 */
export class BlobStore {
  private locks = new Map<string, Promise<unknown>>();

  constructor(private readonly layout: Layout) {}

  hex(digest: string): string {
    return digest.slice('sha256:'.length);
  }

  path(digest: string): string {
    return this.layout.blob(this.hex(digest));
  }

  async has(digest: string): Promise<boolean> {
    try {
      return (await stat(this.path(digest))).isFile();
    } catch {
      return false;
    }
  }

  /** Run `fn` while holding the per-digest lock (FIFO per digest). */
  async withLock<T>(digest: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(digest) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const chain = prev.then(() => mine);
    this.locks.set(digest, chain);
    await prev.catch(() => {});
    try {
      return await fn();
    } finally {
      release();
      if (this.locks.get(digest) === chain) this.locks.delete(digest);
    }
  }

  /** True while some pull holds the lock for `digest`. */
  busy(digest: string): boolean {
    return this.locks.has(digest);
  }

  /**
   * A writer for a blob being downloaded: `write()` each chunk (hashed and written to a temp
   * file), then `commit()` verifies size + digest and renames into place, or `abort()`
   * removes the temp file. Idempotent.
   */
  async writer(desc: Descriptor): Promise<BlobWriter> {
    await mkdir(this.layout.blobs, { recursive: true });
    const tmp = join(this.layout.blobs, `${this.hex(desc.digest)}.${randomBytes(4).toString('hex')}.tmp`);
    return new BlobWriter(desc, tmp, this.path(desc.digest));
  }

  /** Every blob in the store (hex digests as sha256:…), temp files excluded. */
  async list(): Promise<{ digest: string; size: number }[]> {
    let names: string[];
    try {
      names = await readdir(this.layout.blobs);
    } catch {
      return [];
    }
    const out: { digest: string; size: number }[] = [];
    for (const n of names) {
      if (!/^[a-f0-9]{64}$/.test(n)) continue;
      out.push({ digest: `sha256:${n}`, size: (await stat(join(this.layout.blobs, n))).size });
    }
    return out;
  }

  /** Temp files of downloads no pull is running (left by a crash): [digest, file name]. */
  async staleTemps(): Promise<{ digest: string; file: string }[]> {
    const names = await readdir(this.layout.blobs).catch(() => [] as string[]);
    return names
      .map((n) => /^([a-f0-9]{64})\.[a-f0-9]+\.tmp$/.exec(n))
      .filter((m): m is RegExpExecArray => !!m && !this.busy(`sha256:${m[1]}`))
      .map((m) => ({ digest: `sha256:${m[1]}`, file: join(this.layout.blobs, m[0]) }));
  }

  async remove(digest: string): Promise<void> {
    await rm(this.path(digest), { force: true });
  }
}

export class BlobWriter {
  private fd: number;
  private hash = createHash('sha256');
  size = 0;
  private closed = false;

  constructor(readonly desc: Descriptor, readonly tmp: string, readonly target: string) {
    this.fd = openSync(tmp, 'wx', 0o644);
  }

  write(chunk: Buffer): void {
    this.hash.update(chunk);
    let off = 0;
    while (off < chunk.length) off += writeSync(this.fd, chunk, off, chunk.length - off);
    this.size += chunk.length;
  }

  private close(): void {
    if (this.closed) return;
    this.closed = true;
    closeSync(this.fd);
  }

  /** Verify size and digest, then rename into place. Throws E_DIGEST (temp file removed). */
  async commit(): Promise<void> {
    try {
      fsyncSync(this.fd);
      this.close();
      verifyBlob(this.desc, this.size, 'sha256:' + this.hash.digest('hex'));
      await rename(this.tmp, this.target);
    } catch (e) {
      await this.abort();
      throw e;
    }
  }

  async abort(): Promise<void> {
    this.close();
    await rm(this.tmp, { force: true });
  }
}
