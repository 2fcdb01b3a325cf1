import { randomBytes } from 'node:crypto';
import { existsSync, renameSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Context } from '../core/context.js';
import { BangerError, ErrorCode, isBangerError, throwIfAborted } from '../core/errors.js';
import { sha256File } from '../core/fsutil.js';
import { UndoStack } from '../core/undo.js';
import type { ProgressEvent } from '../core/operation.js';
import { entrySize, loadCatalogReport, type BundleEntry, type CatalogEntry, type CatalogFailure } from './catalog.js';
import { fetchDebianKernel, type DebianKernelEntry } from './debian/fetch.js';
import { fetchBlob } from './download.js';
import { PullStore } from '../core/pull-store.js';
import { httpFor } from '../core/http.js';
import { extractBundle, inspectKernelDir, type BundleFiles } from './extract.js';
import { stageImport, type ImportOptions } from './import.js';
import { installKernel } from './install.js';
import { KeyedLock } from '../core/lock.js';
import { noVms, type VmUsage } from '../core/usage.js';
import type { KernelLookup } from './lookup.js';
import { resolveDebianMirror } from './mirror.js';
import { deleteRow, getRow, listRows, type KernelRecord } from './record.js';
import type { CatalogView, KernelDetail, KernelManifest, KernelPullResult } from '../core/shapes/kernel.js';

export type { KernelRecord, KernelManifest } from './record.js';

export interface PullOptions {
  force?: boolean;
  /** Extra catalog URLs from the client, merged after the configured ones. */
  catalogs?: string[];
  signal?: AbortSignal;
  progress?: (ev: ProgressEvent) => void;
}

/** What `kernel pull` returns (core/shapes/kernel.ts). */
export type PullResult = KernelPullResult;
export type { CatalogView } from '../core/shapes/kernel.js';

export type { ImportOptions } from './import.js';

/**
 * Kernels: catalog, pull (bundle or Debian archive), import, list, show, delete.
 *
 * Contract: a kernel appears atomically. Its files are built in a staging directory under
 * `layout.tmp`, then renamed to `kernelDir(name)` in the same SQLite transaction that writes its
 * row; `--force` swaps the old directory out only at that moment, so a failed re-pull leaves the
 * old kernel intact. Every failure removes the staging directory and temp blobs. Operations on
 * one name are serialised (in-process lock).
 */
export class KernelService implements KernelLookup {
  private readonly names = new KeyedLock();
  /** Pulls running or waiting, per name (a waiter reuses the result of the one before it). */
  private readonly pulling = new Map<string, number>();
  private readonly fetchDebian: typeof fetchDebianKernel;
  private readonly etcApt: string;
  private readonly vmUsage: VmUsage;
  /**
   * `deps.vmUsage` answers which VMs use a kernel (the daemon passes the vms table's; default
   * `noVms`, for use without VMs). The others replace boundaries in tests: the Debian archive
   * fetcher and the apt config dir.
   */
  constructor(
    readonly ctx: Context,
    deps: { fetchDebian?: typeof fetchDebianKernel; etcApt?: string; vmUsage?: VmUsage } = {},
  ) {
    this.vmUsage = deps.vmUsage ?? noVms;
    this.fetchDebian = deps.fetchDebian ?? fetchDebianKernel;
    this.etcApt = deps.etcApt ?? '/etc/apt';
  }

  /**
   * Daemon start: remove kernel directories that have no row (a crash between the rename and the
   * commit of an install leaves one) and report rows whose files are gone. Idempotent.
   */
  async reconcile(): Promise<{ removedDirs: string[]; missingFiles: string[] }> {
    const rows = new Set(listRows(this.ctx.db).map((k) => k.name));
    const removedDirs: string[] = [];
    for (const name of await readdir(this.ctx.layout.kernels).catch(() => [] as string[])) {
      if (rows.has(name)) continue;
      await rm(join(this.ctx.layout.kernels, name), { recursive: true, force: true });
      removedDirs.push(name);
      this.ctx.log.warn('reconcile: removed a kernel directory without a database row', { kernel: name });
    }
    const missingFiles = this.list()
      .filter((k) => !k.vmlinux && !k.vmlinuz)
      .map((k) => k.name);
    for (const name of missingFiles) this.ctx.log.warn('reconcile: kernel files are missing; pull it again with --force', { kernel: name });
    return { removedDirs, missingFiles };
  }

  /** Name of the kernel used when none is given (config `defaultKernel`). */
  defaultName(): string {
    return this.ctx.config.defaultKernel;
  }

  /** The pulled kernel `name`; E_NOT_FOUND (hint: pull it) when there is none. */
  get(name: string): KernelRecord {
    const r = getRow(this.ctx.db, name);
    if (!r) throw notPulled(name);
    if (!r.vmlinux && !r.vmlinuz) {
      throw new BangerError(ErrorCode.NotFound, `kernel '${name}': neither vmlinux nor vmlinuz exists in ${r.dir}`, {
        hint: `banger kernel pull ${name} --force   (or banger kernel rm ${name})`,
        details: { kernel: name },
      });
    }
    return r;
  }

  /** Pulled and imported kernels, by name. */
  list(): KernelRecord[] {
    return listRows(this.ctx.db);
  }

  /** One kernel with its manifest. */
  async show(name: string): Promise<KernelDetail> {
    const r = this.get(name);
    const manifest = await readFile(join(r.dir, 'manifest.json'), 'utf8')
      .then((t) => JSON.parse(t) as KernelManifest)
      .catch(() => undefined);
    return { ...r, manifest };
  }

  /**
   * Catalog URLs in merge order: the daemon's config (`kernelCatalogs`), then the ones a client
   * sent (the CLI forwards its BANGER_KERNEL_CATALOGS; http/https only, checked at the RPC boundary).
   */
  catalogUrls(extra: string[] = []): string[] {
    return [...new Set([...this.ctx.config.kernelCatalogs, ...extra])];
  }

  /** The embedded catalog with remote catalogs merged over it, each entry with its STATE; the first unreadable catalog is an error. */
  async catalog(opts: { signal?: AbortSignal; catalogs?: string[] } = {}): Promise<CatalogView[]> {
    const r = await this.catalogReport(opts);
    if (r.failures[0]) throw r.failures[0].error;
    return r.entries;
  }

  /**
   * What `kernel list --available` shows: every readable catalog merged, plus the catalogs that
   * could not be read (unreachable, HTTP error, invalid), so one bad URL does not hide the rest.
   */
  async catalogReport(opts: { signal?: AbortSignal; catalogs?: string[] } = {}): Promise<{ entries: CatalogView[]; failures: CatalogFailure[] }> {
    const { entries, failures } = await loadCatalogReport(this.catalogUrls(opts.catalogs), { ...opts, http: httpFor(this.ctx.config) });
    return { entries: this.views(entries), failures };
  }

  private views(entries: CatalogEntry[]): CatalogView[] {
    const pulled = new Map(this.list().map((k) => [k.name, k]));
    return entries.map((e) => {
      const k = pulled.get(e.name);
      return {
        name: e.name,
        kind: e.kind,
        distro: e.distro,
        arch: e.arch,
        kernelVersion: e.kernelVersion ?? k?.kernelVersion,
        sizeBytes: entrySize(e),
        state: k ? 'pulled' : 'available',
        description: e.description,
        catalog: e.catalog,
        source: e.kind === 'debian' ? `debian:${e.package}/${e.suite}` : (e as BundleEntry).tarballUrl,
      };
    });
  }

  /** Download (or take from the content store), verify, extract and install catalog kernel `name`. */
  async pull(name: string, opts: PullOptions = {}): Promise<PullResult> {
    const waited = (this.pulling.get(name) ?? 0) > 0;
    this.pulling.set(name, (this.pulling.get(name) ?? 0) + 1);
    try {
      return await this.pullLocked(name, waited, opts);
    } finally {
      const n = (this.pulling.get(name) ?? 1) - 1;
      if (n > 0) this.pulling.set(name, n);
      else this.pulling.delete(name);
    }
  }

  private pullLocked(name: string, waited: boolean, opts: PullOptions): Promise<PullResult> {
    return this.names.run(
      name,
      async () => {
        const existing = getRow(this.ctx.db, name);
        if (waited && existing && !opts.force) {
          opts.progress?.({ stage: 'download', key: name, message: 'used cache (pulled by a concurrent request)', done: true });
          return { kernel: existing, download: 'cached', replaced: false, joined: true };
        }
        if (existing && !opts.force) {
          throw new BangerError(ErrorCode.Exists, `kernel '${name}' is already pulled`, {
            hint: `banger kernel pull ${name} --force   (replaces it)`,
            details: { kernel: name },
          });
        }
        const report = await loadCatalogReport(this.catalogUrls(opts.catalogs), { signal: opts.signal, http: httpFor(this.ctx.config) });
        const entry = report.entries.find((e) => e.name === name);
        if (!entry) {
          // It may be in a catalog we could not read: say so rather than "not in the catalog".
          if (report.failures[0]) throw report.failures[0].error;
          throw new BangerError(ErrorCode.NotFound, `kernel '${name}' is not in the catalog`, {
            hint: "see 'banger kernel list --available', or add a catalog with BANGER_KERNEL_CATALOGS",
            details: { kernel: name },
          });
        }
        return this.pullEntry(entry, !!existing, opts);
      },
      opts.signal,
    );
  }

  private async pullEntry(entry: CatalogEntry, replacing: boolean, opts: PullOptions): Promise<PullResult> {
    const { signal, progress } = opts;
    const name = entry.name;
    const log = this.ctx.log.child({ kernel: name });
    const undo = new UndoStack((m, f) => log.warn(m, f));
    await mkdir(this.ctx.layout.tmp, { recursive: true });
    const staging = await mkdtemp(join(this.ctx.layout.tmp, `kernel-${name}-`));
    undo.push('remove staging directory', () => rm(staging, { recursive: true, force: true }));
    const onSuccess: (() => void)[] = [];
    try {
      let files: BundleFiles;
      let source: string;
      let kernelVersion: string;
      let download: PullResult['download'];
      let blobs: string[] = [];
      if (entry.kind === 'debian') {
        const tmpDir = await mkdtemp(join(this.ctx.layout.tmp, `debian-${name}-`));
        undo.push('remove Debian scratch directory', () => rm(tmpDir, { recursive: true, force: true }));
        const mirror = await resolveDebianMirror(this.ctx.config.debianMirror, this.etcApt);
        log.info('fetching Debian kernel', { mirror, package: (entry as DebianKernelEntry).package });
        // .debs this pull stores are removed again if it fails (core/pull-store.ts).
        const debs = new PullStore(this.ctx.layout, this.ctx.db);
        undo.push('forget the .debs in use', () => debs.end());
        undo.push('remove the .debs this pull stored', () => debs.discard(log).then(() => undefined));
        const res = await this.fetchDebian({
          entry: entry as DebianKernelEntry,
          mirror,
          keyring: this.ctx.config.debianKeyring,
          outDir: staging,
          tmpDir,
          exec: this.ctx.exec,
          log,
          signal,
          progress,
          store: debs,
          http: httpFor(this.ctx.config),
        });
        onSuccess.push(() => debs.end());
        blobs = res.blobs ?? [];
        throwIfAborted(signal);
        files = await inspectKernelDir(staging, name, false);
        if (!files.vmlinux && !files.vmlinuz) throw new BangerError(ErrorCode.Bundle, `kernel ${name}: the Debian fetch produced neither vmlinux nor vmlinuz`);
        source = res.source;
        kernelVersion = res.kernelVersion;
        download = 'debian';
        await rm(tmpDir, { recursive: true, force: true });
      } else {
        const b = entry as BundleEntry;
        // Single pass when downloading: zstd + tar extraction run on the bytes as they arrive;
        // the blob lands in the store only once the extraction and the digest both succeeded.
        // Journalled like the .debs: a crash before the kernel's row exists leaves no bundle.
        const bundles = new PullStore(this.ctx.layout, this.ctx.db);
        undo.push('forget the bundle in use', () => bundles.end());
        undo.push('remove the bundle this pull stored (when nothing else uses it)', () => bundles.discard(log).then(() => undefined));
        onSuccess.push(() => bundles.end());
        const blob = await fetchBlob({
          store: bundles,
          url: b.tarballUrl,
          sha256: b.tarballSha256,
          layout: this.ctx.layout,
          label: name,
          signal,
          progress,
          http: httpFor(this.ctx.config),
          maxBytes: Math.max(2 * b.sizeBytes, 256 * 1024 * 1024),
          consume: (stream, total) => extractBundle({ src: stream, total, dest: staging, label: name, signal }),
        });
        log.info(blob.status === 'cached' ? 'bundle: used cache' : 'bundle: downloaded', { url: b.tarballUrl, bytes: blob.bytes });
        throwIfAborted(signal);
        if (blob.status === 'cached') await this.extractCached(name, b, blob.path, staging, signal, progress);
        else progress?.({ stage: 'extract', key: name, message: 'extracted while downloading', done: true });
        progress?.({ stage: 'verify', key: name, message: 'bundle layout' });
        files = await inspectKernelDir(staging, name, true);
        source = `pull:${b.tarballUrl}`;
        blobs = [`sha256:${b.tarballSha256}`];
        kernelVersion = b.kernelVersion;
        download = blob.status;
      }
      throwIfAborted(signal);
      const kernel = await installKernel(this.ctx, staging, { name, distro: entry.distro, arch: entry.arch, kernelVersion, source }, files, signal, blobs);
      undo.commit();
      for (const f of onSuccess) f();
      progress?.({ stage: 'install', key: name, message: `installed ${kernel.dir}`, done: true });
      log.info('kernel pulled', { source, download, replaced: replacing });
      return { kernel, download, replaced: replacing, joined: false };
    } catch (e) {
      await undo.unwind();
      if (signal?.aborted && !isBangerError(e)) throw new BangerError(ErrorCode.Cancelled, `kernel ${name}: pull cancelled`, { cause: e });
      throw e;
    }
  }

  /** Extract a bundle already in the content store (re-hashed while read; a damaged one is removed). */
  private async extractCached(
    name: string,
    b: BundleEntry,
    path: string,
    staging: string,
    signal?: AbortSignal,
    progress?: (ev: ProgressEvent) => void,
  ): Promise<void> {
    try {
      await extractBundle({ src: path, dest: staging, label: name, expectSha256: b.tarballSha256, signal, progress });
    } catch (e) {
      // A stored blob that fails to extract may have been damaged on disk: check it, drop it if so.
      if (isBangerError(e, ErrorCode.Digest) || (await sha256File(path).catch(() => '')) !== b.tarballSha256) {
        await rm(path, { force: true });
        if (!isBangerError(e, ErrorCode.Digest)) {
          throw new BangerError(ErrorCode.Digest, `kernel ${name}: stored bundle ${path} does not match its sha256 ${b.tarballSha256}`, {
            hint: 'the cached copy was damaged; it has been removed, pull again to download it',
            cause: e,
          });
        }
      }
      throw e;
    }
  }

  /** Copy local kernel files into the store as `name` (source "import:<path>"). */
  async import(name: string, opts: ImportOptions): Promise<KernelRecord> {
    return this.names.run(
      name,
      async () => {
        const existing = getRow(this.ctx.db, name);
        if (existing && !opts.force) {
          throw new BangerError(ErrorCode.Exists, `kernel '${name}' already exists`, {
            hint: `pass --force to replace it, or choose another name`,
            details: { kernel: name },
          });
        }
        const undo = new UndoStack((m, f) => this.ctx.log.warn(m, f));
        await mkdir(this.ctx.layout.tmp, { recursive: true });
        const staging = await mkdtemp(join(this.ctx.layout.tmp, `kernel-${name}-`));
        undo.push('remove staging directory', () => rm(staging, { recursive: true, force: true }));
        try {
          const staged = await stageImport(name, opts, staging, this.ctx.log);
          throwIfAborted(opts.signal);
          const rec = await installKernel(this.ctx, staging, staged.meta, staged.files, opts.signal);
          undo.commit();
          this.ctx.log.info('kernel imported', { kernel: name, from: opts.vmlinux, kind: staged.kind, droppedLinks: staged.droppedLinks });
          return rec;
        } catch (e) {
          await undo.unwind();
          throw e;
        }
      },
      opts.signal,
    );
  }

  /**
   * Remove kernel `name` (row and directory). E_IN_USE when a VM references it, unless `force`;
   * `usedBy` then names the VMs that still refer to it.
   */
  async rm(name: string, opts: { force?: boolean } = {}): Promise<{ removed: string[]; usedBy: string[] }> {
    return this.names.run(name, async () => {
      const rec = getRow(this.ctx.db, name);
      if (!rec) throw notPulled(name);
      const users = this.vmUsage.vmsUsingKernel(name);
      if (users.length && !opts.force) {
        throw new BangerError(ErrorCode.InUse, `kernel '${name}' is used by VM(s): ${users.join(', ')}`, {
          hint: `remove those VMs first (banger vm rm ${users[0]}), or pass --force to delete the kernel anyway`,
          details: { kernel: name, vms: users },
        });
      }
      await mkdir(this.ctx.layout.tmp, { recursive: true });
      const trash = join(this.ctx.layout.tmp, `kernel-${name}-rm-${randomBytes(4).toString('hex')}`);
      this.ctx.db.transaction(() => {
        deleteRow(this.ctx.db, name);
        if (existsSync(rec.dir)) renameSync(rec.dir, trash);
      })();
      await rm(trash, { recursive: true, force: true });
      this.ctx.log.info('kernel deleted', { kernel: name, force: !!opts.force, usedBy: users });
      return { removed: [name], usedBy: users };
    });
  }
}

function notPulled(name: string): BangerError {
  return new BangerError(ErrorCode.NotFound, `kernel '${name}' is not pulled`, {
    hint: `banger kernel pull ${name}   (see 'banger kernel list --available')`,
    details: { kernel: name },
  });
}
