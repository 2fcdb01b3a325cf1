import { createHash, randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, openSync, writeSync } from 'node:fs';
import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { DB } from './db.js';
import { BangerError, ErrorCode } from './errors.js';
import { KeyedLock } from './lock.js';
import type { Layout } from './paths.js';

/**
 * The one content store of a banger root: every blob banger keeps (OCI configs and layers,
 * kernel bundles, Debian .debs) lives at `blobs/sha256/<hex>`, written by one writer (temp file
 * `<hex>.<rand>.tmp` in the same directory → size + sha256 verified → rename), under one
 * per-digest lock shared by every service of the process. Which image, kernel or cache entry
 * uses a blob is recorded in SQLite (`blob_refs`, kept in step with `image_blobs` and
 * `kernels` by triggers); `prune()` frees only blobs nothing references and no one is writing.
 * Digests are `sha256:<hex>` throughout.
 */

export type RefKind = 'image' | 'kernel' | 'cache';

/** Locks per store directory, so every service of one root shares them. */
const locksByDir = new Map<string, KeyedLock>();

export function hexOf(digest: string): string {
  if (!/^sha256:[a-f0-9]{64}$/.test(digest)) throw new BangerError(ErrorCode.Invalid, `not a sha256 digest: '${digest}'`);
  return digest.slice(7);
}

export class ContentStore {
  private readonly locks: KeyedLock;

  /** A store whose blobs live in `dir` (benchmarks, tests); a root's store is `new ContentStore(layout, db)`. */
  static at(dir: string, db?: DB): ContentStore {
    return new ContentStore({ blobs: dir, blob: (hex) => join(dir, hex) }, db);
  }

  constructor(
    private readonly layout: Pick<Layout, 'blobs' | 'blob'>,
    private readonly db?: DB,
  ) {
    let l = locksByDir.get(layout.blobs);
    if (!l) locksByDir.set(layout.blobs, (l = new KeyedLock()));
    this.locks = l;
  }

  hex(digest: string): string {
    return hexOf(digest);
  }

  path(digest: string): string {
    return this.layout.blob(hexOf(digest));
  }

  async has(digest: string): Promise<boolean> {
    return (await stat(this.path(digest)).catch(() => undefined))?.isFile() ?? false;
  }

  /** Run `fn` holding the per-digest lock (FIFO); waiting respects `signal`. */
  withLock<T>(digest: string, fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    return this.locks.run(digest, fn, signal);
  }

  /** True while someone holds or waits for the lock of `digest` (a write may be in flight). */
  busy(digest: string): boolean {
    return this.locks.busy(digest);
  }

  /** A writer for `digest` (expected `size` when known); call under `withLock`. */
  async writer(expect: { digest: string; size?: number }): Promise<BlobWriter> {
    await mkdir(this.layout.blobs, { recursive: true });
    const tmp = join(this.layout.blobs, `${hexOf(expect.digest)}.${randomBytes(4).toString('hex')}.tmp`);
    return new BlobWriter(expect, tmp, this.path(expect.digest));
  }

  /** Every complete blob (temp files excluded). */
  async list(): Promise<{ digest: string; size: number }[]> {
    const out: { digest: string; size: number }[] = [];
    for (const n of await readdir(this.layout.blobs).catch(() => [] as string[])) {
      if (!/^[a-f0-9]{64}$/.test(n)) continue;
      const st = await stat(join(this.layout.blobs, n)).catch(() => undefined);
      if (st?.isFile()) out.push({ digest: `sha256:${n}`, size: st.size });
    }
    return out;
  }

  /** Temp files no writer of this process holds (left by a crash or a failed write). */
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

  /** Record that `owner` (of `kind`) uses `digests` (idempotent). Call inside the owner's transaction. */
  addRefs(kind: RefKind, owner: string, digests: string[]): void {
    if (!this.db) return;
    const ins = this.db.prepare('INSERT OR IGNORE INTO blob_refs (digest, owner_kind, owner) VALUES (?, ?, ?)');
    for (const d of digests) ins.run(d, kind, owner);
  }

  /** Forget every reference of `owner`. */
  dropRefs(kind: RefKind, owner: string): void {
    this.db?.prepare('DELETE FROM blob_refs WHERE owner_kind = ? AND owner = ?').run(kind, owner);
  }

  /** Digests something references, with who: digest → ["kernel:foo", "image:bar"]. */
  references(): Map<string, string[]> {
    const out = new Map<string, string[]>();
    if (!this.db) return out;
    for (const r of this.db.prepare('SELECT digest, owner_kind, owner FROM blob_refs ORDER BY digest').all() as {
      digest: string;
      owner_kind: string;
      owner: string;
    }[]) {
      out.set(r.digest, [...(out.get(r.digest) ?? []), `${r.owner_kind}:${r.owner}`]);
    }
    return out;
  }

  /**
   * Free every blob nothing references and no one is writing, and every stale temp file.
   * `keep` adds digests to keep (e.g. an in-flight build's). Returns what was removed.
   */
  async prune(keep: Set<string> = new Set()): Promise<{ removed: number; freedBytes: number; kept: number }> {
    const refs = this.references();
    let removed = 0;
    let freedBytes = 0;
    let kept = 0;
    for (const b of await this.list()) {
      if (refs.has(b.digest) || keep.has(b.digest) || this.busy(b.digest)) {
        kept++;
        continue;
      }
      await this.remove(b.digest);
      removed++;
      freedBytes += b.size;
    }
    for (const t of await this.staleTemps()) {
      const st = await stat(t.file).catch(() => undefined);
      await rm(t.file, { force: true });
      removed++;
      freedBytes += st?.size ?? 0;
    }
    return { removed, freedBytes, kept };
  }
}

/**
 * Writes one blob: `write()` chunks (hashed, written to the temp file), then `commit()` checks
 * size and sha256 and renames into place, or `abort()` removes the temp file. Both idempotent;
 * a failed commit removes the temp file and throws E_DIGEST.
 */
export class BlobWriter {
  private fd: number;
  private readonly hash = createHash('sha256');
  size = 0;
  private closed = false;

  constructor(
    readonly expect: { digest: string; size?: number },
    readonly tmp: string,
    readonly target: string,
  ) {
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

  async commit(): Promise<void> {
    try {
      fsyncSync(this.fd);
      this.close();
      const got = 'sha256:' + this.hash.digest('hex');
      const { digest, size } = this.expect;
      if (size !== undefined && this.size < size)
        throw new BangerError(ErrorCode.Digest, `blob ${digest} is cut off: got ${this.size} of ${size} bytes`, {
          hint: 'the download was truncated; try again',
        });
      if (size !== undefined && this.size > size)
        throw new BangerError(ErrorCode.Digest, `blob ${digest} is larger than the ${size} bytes its descriptor says`);
      if (got !== digest)
        throw new BangerError(ErrorCode.Digest, `blob ${digest}: digest mismatch (content hashes to ${got})`, {
          hint: 'the server sent other content; nothing was kept',
          details: { expected: digest, actual: got },
        });
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

/**
 * Throws E_DIGEST when a blob's size or digest differs from what its reference promised
 * (`expect`: an OCI descriptor, a catalog entry). `digest` is what the bytes hashed to.
 */
export function verifyBlob(expect: { digest: string; size: number }, size: number, digest: string): void {
  if (size < expect.size)
    throw new BangerError(ErrorCode.Digest, `blob ${expect.digest} is cut off: got ${size} of ${expect.size} bytes`, {
      hint: 'the download was truncated; retry the pull',
    });
  if (size > expect.size) throw new BangerError(ErrorCode.Digest, `blob ${expect.digest} is larger than the ${expect.size} bytes its descriptor says`);
  if (digest !== expect.digest)
    throw new BangerError(ErrorCode.Digest, `blob ${expect.digest}: digest mismatch (content hashes to ${digest})`, {
      hint: 'the registry served corrupt content; nothing was kept',
    });
}
