import { stepOf } from '../core/steps.js';
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, open, rename, rm, stat, writeFile } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import { BangerError, ErrorCode, throwIfAborted } from '../core/errors.js';
import { toolEnv } from '../core/exec.js';
import { httpFor } from '../core/http.js';
import { sha256File } from '../core/fsutil.js';
import { UndoStack } from '../core/undo.js';
import type { Context } from '../core/context.js';
import { injectGuestFiles } from '../guest/inject.js';
import type { KernelLookup } from '../kernels/lookup.js';
import { noVms, type VmUsage } from '../core/usage.js';
import type { ImageLookup } from './lookup.js';
import type { ProgressEvent } from '../core/operation.js';
import { LayerApplier } from './apply.js';
import { buildExt4 } from './build.js';
import { applyTarStream, pullAndApplyLayers } from './layers.js';
import { ImageRepo, type ImageRecord } from './records.js';
import { defaultImageName, parseReference } from './reference.js';
import { CredentialStore, normaliseRegistryKey } from './registry/auth.js';
import { SecretBox } from '../core/secrets.js';
import { RegistryClient } from './registry/client.js';
import { formatPlatform, layerCompression, parsePlatform, type Compression, type ImageConfig } from './registry/manifest.js';
import { BlobStore } from './store.js';
import { resolveImage } from './resolve.js';
import { BUILD_KEY_FILE, buildKey, linkBuiltRootfs } from './reuse.js';
import { chooseStagingParent, cleanStaleRamStaging, isNoSpace, RAM_DIR, ramPrefix } from './staging.js';

export type { ImageRecord } from './records.js';

export interface OpContext {
  signal?: AbortSignal;
  progress?: (ev: ProgressEvent) => void;
}

export interface PullParams {
  ref: string;
  /** Re-use the ext4 of an identical local build (default true; the benchmark turns it off). */
  reuse?: boolean;
  name?: string;
  kernelRef?: string;
  platform?: string;
  sizeBytes?: number;
}

export interface ImportParams {
  name: string;
  rootfsTar?: string;
  rootfsDir?: string;
  kernelRef?: string;
  sizeBytes?: number;
}

interface BuildSpec {
  name: string;
  sourceRef: string;
  digest: string;
  platform: string;
  config: ImageConfig;
  kernelRef: string | null;
  fromRegistry: boolean;
  sizeBytes?: number;
  rawConfig?: Buffer;
  /** Rough size of the unpacked tree (chooses RAM or disk staging); undefined = disk. */
  estimateBytes?: number;
  /** Identical builds share this key; a match is hard-linked instead of rebuilt. */
  buildKey?: string;
  /** Fill the (empty) root directory. */
  fill(rootDir: string, applier: LayerApplier): Promise<void>;
  blobs(): string[];
}

/**
 * Images: OCI pull → ext4, import, list, show, rm, prune-cache, registry credentials.
 * Every build runs as named steps (reserve, stage, layers, inject, mkfs, land, record)
 * with an undo stack: on any failure or cancellation nothing is left (no staging dir, no
 * partial rootfs, no row); verified blobs stay in the content store.
 */
export class ImageService implements ImageLookup {
  readonly repo: ImageRepo;
  readonly store: BlobStore;
  readonly creds: CredentialStore;
  private readonly building = new Set<string>();
  private readonly pending = new Set<Promise<void>>();
  /** The tmpfs used for RAM staging (tests point it at a small tmpfs of their own). */
  ramDir = RAM_DIR;

  private readonly vmUsage: VmUsage;

  /**
   * `deps.kernels` checks `--kernel-ref`; `deps.vmUsage` answers which VMs use an image (the
   * daemon passes the vms table's; default `noVms`, for use without VMs).
   */
  constructor(readonly ctx: Context, readonly deps: { kernels: KernelLookup; vmUsage?: VmUsage }) {
    this.vmUsage = deps.vmUsage ?? noVms;
    this.repo = new ImageRepo(ctx.db);
    this.store = new BlobStore(ctx.layout, ctx.db);
    this.creds = new CredentialStore(ctx.db, ctx.exec, process.env, new SecretBox(ctx.layout.secretKey));
    this.background(
      cleanStaleRamStaging(ctx.layout.root).then((r) => r.length && ctx.log.info('removed stale RAM staging dirs', { dirs: r })),
      'clean stale RAM staging',
    );
  }

  /** Prefix of this root's RAM staging dirs under /dev/shm (tests check nothing is left). */
  ramStagingPrefix(): string {
    return ramPrefix(this.ctx.layout.root);
  }

  /**
   * Work finished after a reply was sent (removing a finished build's staging tree, which
   * can take seconds); `settled()` resolves when all of it is done. Stale staging dirs left
   * by a crash are wiped by the daemon's tmp cleanup at start.
   */
  private background(p: Promise<unknown>, what: string): void {
    const t = p.then(
      () => undefined,
      (e) => this.ctx.log.warn('background step failed', { step: what, error: (e as Error).message }),
    );
    this.pending.add(t);
    void t.finally(() => this.pending.delete(t));
  }

  async settled(): Promise<void> {
    while (this.pending.size) await Promise.all([...this.pending]);
  }

  /** The image named `name`; throws E_NOT_FOUND (hint: `banger image list`). */
  get(name: string): ImageRecord {
    return this.repo.get(name);
  }

  list(): ImageRecord[] {
    return this.repo.list();
  }

  show(name: string): ImageRecord & { blobs: string[]; usedBy: string[] } {
    const r = this.repo.get(name);
    return { ...r, blobs: this.repo.blobs(name), usedBy: this.vmUsage.vmsUsingImage(name) };
  }

  private async checkKernel(kernelRef: string | undefined): Promise<string | null> {
    if (!kernelRef) return null;
    try {
      this.deps.kernels.get(kernelRef);
    } catch (e) {
      if (e instanceof BangerError && e.code === ErrorCode.NotFound) {
        throw new BangerError(ErrorCode.NotFound, `--kernel-ref: kernel '${kernelRef}' not found`, { hint: "see 'banger kernel list', or pull it with 'banger kernel pull NAME'", cause: e });
      }
      throw e;
    }
    return kernelRef;
  }

  private client(ref: ReturnType<typeof parseReference>, signal?: AbortSignal, progress?: (ev: ProgressEvent) => void): RegistryClient {
    return new RegistryClient(ref, {
      creds: this.creds,
      log: this.ctx.log,
      insecureRegistries: this.ctx.config.insecureRegistries,
      mirrors: this.ctx.config.registryMirrors,
      signal,
      http: httpFor(this.ctx.config),
      onWait: progress ? (message) => progress({ stage: 'http', message }) : undefined,
    });
  }

  /** `banger image pull`: resolve, verify and apply the image, then build its ext4. */
  async pull(p: PullParams, op: OpContext = {}): Promise<ImageRecord> {
    const signal = op.signal ?? new AbortController().signal;
    const progress = op.progress ?? (() => {});
    const ref = parseReference(p.ref);
    const name = p.name ?? defaultImageName(ref);
    const want = parsePlatform(p.platform ?? 'linux/amd64');
    const kernelRef = await this.checkKernel(p.kernelRef);
    // Pulling a name that exists from the same reference is like `docker pull`: it checks the
    // registry and is a no-op when nothing changed. A changed image is never swapped under the
    // VMs whose disks are backed by it: that is E_EXISTS with the way out.
    const existing = this.repo.find(name);
    if (!existing || existing.sourceRef !== ref.canonical) this.reserveCheck(name);
    const log = this.ctx.log.child({ op: 'image.pull', image: name, ref: ref.canonical });
    const client = this.client(ref, signal, progress);

    progress({ stage: 'resolve', message: `resolving ${ref.canonical}` });
    const { manifest, manifestDigest, rawConfig, config } = await resolveImage(client, this.store, ref, want);
    log.info('resolved', { digest: manifestDigest, layers: manifest.layers.length });
    if (existing) {
      const same = existing.digest === manifestDigest && existing.platform === formatPlatform(want) && (p.sizeBytes === undefined || p.sizeBytes === existing.sizeBytes) && (kernelRef === null || kernelRef === existing.kernelRef);
      if (same) {
        progress({ stage: 'resolve', message: `image '${name}' is up to date (${manifestDigest.slice(0, 19)})`, done: true });
        return existing;
      }
      const what = existing.digest !== manifestDigest ? `the registry now has ${manifestDigest.slice(0, 19)}, the local image is ${existing.digest.slice(0, 19)}` : 'with other settings (--platform, --size or --kernel-ref)';
      throw new BangerError(ErrorCode.Exists, `image '${name}' already exists from ${ref.canonical}; ${what}`, { hint: `remove it first ('banger image rm ${name}'; VMs made from it need it) or pull under another --name` });
    }
    return this.build(
      {
        name,
        sourceRef: ref.canonical,
        digest: manifestDigest,
        platform: formatPlatform(want),
        config,
        kernelRef,
        fromRegistry: true,
        sizeBytes: p.sizeBytes,
        rawConfig,
        estimateBytes: manifest.layers.reduce((n, l) => n + l.size * (layerCompression(l.mediaType, l.digest) === 'none' ? 1.1 : 4), 0) + 64 * 1024 * 1024,
        buildKey: p.reuse === false ? undefined : await buildKey({ digest: manifestDigest, platform: formatPlatform(want), sizeBytes: p.sizeBytes }),
        blobs: () => [manifest.config.digest, ...manifest.layers.map((l) => l.digest)],
        fill: async (_root, applier) => {
          const r = await pullAndApplyLayers({ layers: manifest.layers, client, store: this.store, applier, log, progress, signal });
          log.info('layers applied', r);
        },
      },
      { signal, progress },
    );
  }

  /** `banger image import NAME (--rootfs-tar PATH | --rootfs-dir PATH)`. */
  async importImage(p: ImportParams, op: OpContext = {}): Promise<ImageRecord> {
    const signal = op.signal ?? new AbortController().signal;
    if (!!p.rootfsTar === !!p.rootfsDir) throw new BangerError(ErrorCode.Invalid, 'give exactly one of --rootfs-tar or --rootfs-dir');
    const field = p.rootfsTar ? '--rootfs-tar' : '--rootfs-dir';
    const src = (p.rootfsTar ?? p.rootfsDir)!;
    if (!isAbsolute(src)) throw new BangerError(ErrorCode.Invalid, `${field} '${src}' must be an absolute path`);
    const st = await stat(src).catch(() => undefined);
    if (!st) throw new BangerError(ErrorCode.NotFound, `${field} '${src}' does not exist`);
    if (p.rootfsTar && !st.isFile()) throw new BangerError(ErrorCode.Invalid, `${field} '${src}' is not a file`);
    if (p.rootfsDir && !st.isDirectory()) throw new BangerError(ErrorCode.Invalid, `${field} '${src}' is not a directory`);
    const kernelRef = await this.checkKernel(p.kernelRef);
    this.reserveCheck(p.name);
    const digest = p.rootfsTar ? 'sha256:' + (await sha256File(src)) : '';
    return this.build(
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
            await this.ctx.exec(['cp', '-a', '--reflink=auto', '--', `${src}/.`, `${root}/`], { env: toolEnv(), signal });
          }
        },
      },
      op,
    );
  }

  private reserveCheck(name: string): void {
    if (this.repo.find(name)) throw new BangerError(ErrorCode.Exists, `image '${name}' already exists`, { hint: `remove it with 'banger image rm ${name}' or choose another --name` });
    if (this.building.has(name)) throw new BangerError(ErrorCode.Exists, `image '${name}' is being built by another request`, { hint: 'wait for it, or choose another --name' });
  }

  /** Build, staged in RAM when it fits; a RAM stage that runs full is retried on disk. */
  private async build(spec: BuildSpec, op: OpContext): Promise<ImageRecord> {
    const where = await chooseStagingParent({ mode: this.ctx.config.imageStaging, diskTmp: this.ctx.layout.tmp, estimateBytes: spec.estimateBytes, ramDir: this.ramDir });
    try {
      return await this.buildIn(spec, op, where.dir, where.ram);
    } catch (e) {
      if (!where.ram || !isNoSpace(e) || op.signal?.aborted) throw e;
      this.ctx.log.warn('RAM staging ran out of space; building again on disk', { image: spec.name });
      op.progress?.({ stage: 'extract', message: 'RAM staging full: retrying on disk' });
      return this.buildIn(spec, op, this.ctx.layout.tmp, false);
    }
  }

  /** The shared build: stage → fill → finish → inject → mkfs → land → record. */
  private async buildIn(spec: BuildSpec, op: OpContext, stagingParent: string, ram: boolean): Promise<ImageRecord> {
    const signal = op.signal ?? new AbortController().signal;
    const progress = op.progress ?? (() => {});
    const log = this.ctx.log.child({ op: 'image.build', image: spec.name });
    const undo = new UndoStack((m, f) => log.warn(m, f));
    let step = 'reserve';
    let t0 = Date.now();
    const stepDone = (name: string) => {
      log.info('step done', { step: name, ms: Date.now() - t0 });
      t0 = Date.now();
    };
    try {
      this.reserveCheck(spec.name);
      this.building.add(spec.name);
      undo.push('release name', () => void this.building.delete(spec.name));

      step = 'stage';
      await mkdir(this.ctx.layout.tmp, { recursive: true });
      const staging = await mkdtemp(join(stagingParent, ram ? `${ramPrefix(this.ctx.layout.root)}image-${spec.name}-` : `image-${spec.name}-`));
      log.debug('staging', { dir: staging, ram });
      undo.push('remove staging dir', () => rm(staging, { recursive: true, force: true }));
      const rootDir = join(staging, 'rootfs');
      await mkdir(rootDir, { mode: 0o755 });

      // the ext4 is written on disk beside its final place (rename must not cross filesystems)
      const outParent = await mkdtemp(join(this.ctx.layout.tmp, `image-${spec.name}-out-`));
      undo.push('remove build output dir', () => rm(outParent, { recursive: true, force: true }));
      const out = join(outParent, 'image');
      await mkdir(out);
      let reusedBytes: number | undefined;
      if (spec.buildKey) {
        const others = this.repo.list().map((r) => this.ctx.layout.imageDir(r.name));
        reusedBytes = await linkBuiltRootfs(others, spec.buildKey, out);
        if (reusedBytes !== undefined) {
          log.info('re-using the ext4 of an identical build', { buildKey: spec.buildKey });
          progress({ stage: 'mkfs', done: true, total: reusedBytes, message: 'identical build found: ext4 re-used' });
        }
      }
      let built: { sizeBytes: number };
      if (reusedBytes !== undefined) built = { sizeBytes: reusedBytes };
      else {
        step = 'layers';
        const applier = new LayerApplier(rootDir, { exec: this.ctx.exec, signal, limits: this.ctx.config.imageLimits });
        await spec.fill(rootDir, applier);
        throwIfAborted(signal);
        stepDone('layers');
        progress({ stage: 'extract', message: 'finishing (xattrs, directory times)' });
        await applier.finish();
        stepDone('finish');
        progress({ stage: 'extract', done: true, message: `${applier.entries} entries applied` });

        step = 'inject';
        throwIfAborted(signal);
        const inj = await injectGuestFiles(rootDir, { exec: this.ctx.exec, log });
        log.info('guest files injected', { files: inj.injected.length });
        stepDone('inject');

        step = 'mkfs';
        progress({ stage: 'mkfs', message: 'building ext4 (mkfs.ext4 -d)' });
        built = await buildExt4(this.ctx.exec, { dir: rootDir, out: join(out, 'rootfs.ext4'), sizeBytes: spec.sizeBytes, signal, onStage: (s) => progress({ stage: 'mkfs', message: s === 'fsck' ? 'checking (e2fsck -fn)' : 'building ext4 (mkfs.ext4 -d)' }) });
        progress({ stage: 'mkfs', done: true, total: built.sizeBytes, message: 'ext4 built and checked' });
        stepDone('mkfs');
      }
      if (spec.buildKey) await writeFile(join(out, BUILD_KEY_FILE), spec.buildKey + '\n');
      if (spec.rawConfig) await writeFile(join(out, 'config.json'), spec.rawConfig);
      throwIfAborted(signal);

      step = 'land';
      const final = this.ctx.layout.imageDir(spec.name);
      await mkdir(this.ctx.layout.images, { recursive: true });
      await rm(final, { recursive: true, force: true }); // an orphan from a crash (no row exists)
      await rename(out, final);
      undo.push('remove image dir', () => rm(final, { recursive: true, force: true }));

      step = 'record';
      const rec: ImageRecord = {
        name: spec.name,
        sourceRef: spec.sourceRef,
        digest: spec.digest,
        platform: spec.platform,
        config: spec.config,
        sizeBytes: built.sizeBytes,
        kernelRef: spec.kernelRef,
        rootfsPath: join(final, 'rootfs.ext4'),
        fromRegistry: spec.fromRegistry,
        createdAt: new Date().toISOString(),
      };
      this.repo.insert(rec, spec.blobs());
      undo.commit();
      this.building.delete(spec.name);
      this.background(Promise.all([rm(staging, { recursive: true, force: true }), rm(outParent, { recursive: true, force: true })]), 'remove staging dir');
      log.info('image ready', { digest: rec.digest, sizeBytes: rec.sizeBytes });
      return rec;
    } catch (e) {
      await undo.unwind();
      if (signal.aborted && !(e instanceof BangerError && e.code === ErrorCode.Cancelled)) throw new BangerError(ErrorCode.Cancelled, `image ${spec.name}: cancelled during step ${step}`, { cause: e });
      if (e instanceof BangerError) {
        if (e.code === ErrorCode.Cancelled || stepOf(e) !== undefined) throw e;
        throw new BangerError(e.code, `image ${spec.name}: step ${step}: ${e.message}`, { hint: e.hint, cause: e, details: { ...e.details, step } });
      }
      throw new BangerError(ErrorCode.Internal, `image ${spec.name}: step ${step}: ${(e as Error).message}`, { cause: e, details: { step } });
    }
  }

  /** `banger image rm`: refused while a VM uses the image unless `force`. */
  async rm(name: string, force = false): Promise<{ removed: string[] }> {
    this.repo.get(name);
    if (this.building.has(name)) throw new BangerError(ErrorCode.InUse, `image '${name}' is being built`);
    const users = this.vmUsage.vmsUsingImage(name);
    if (users.length && !force) {
      throw new BangerError(ErrorCode.InUse, `image '${name}' is used by VM(s): ${users.join(', ')}`, { hint: `remove the VMs first ('banger vm rm ${users[0]}') or pass --force`, details: { vms: users } });
    }
    const dir = this.ctx.layout.imageDir(name);
    await mkdir(this.ctx.layout.tmp, { recursive: true });
    const trash = join(this.ctx.layout.tmp, `rm-image-${name}-${Date.now()}`);
    await rename(dir, trash).catch((e) => {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    });
    this.repo.delete(name);
    await rm(trash, { recursive: true, force: true });
    await rm(this.ctx.layout.imageCacheDir(name), { recursive: true, force: true }); // VMM drivers' per-image caches
    return { removed: [name] };
  }

  /**
   * `banger image prune-cache` (= `banger system prune`): free blobs that no image, kernel or
   * cache entry references, and temp files of dead downloads; blobs being written are kept.
   */
  async pruneCache(): Promise<{ removed: number; freedBytes: number }> {
    const r = await this.store.prune();
    return { removed: r.removed, freedBytes: r.freedBytes };
  }

  /** `banger registry login`: verify the credentials against the registry, then store them. */
  async login(p: { registry: string; username: string; password: string }, op: OpContext = {}): Promise<{ registry: string; username: string }> {
    const registry = normaliseRegistryKey(p.registry);
    const ref = parseReference(`${registry}/banger/login-check`);
    const client = new RegistryClient(ref, {
      creds: { get: async () => ({ username: p.username, password: p.password, source: 'the login command' }) },
      log: this.ctx.log,
      insecureRegistries: this.ctx.config.insecureRegistries,
      mirrors: {},
      signal: op.signal,
      http: httpFor(this.ctx.config),
    });
    await client.checkLogin();
    this.creds.save(registry, p.username, p.password);
    return { registry, username: p.username };
  }

  logout(registry: string): { registry: string; removed: boolean } {
    const key = normaliseRegistryKey(registry);
    const removed = this.creds.remove(key);
    if (!removed) throw new BangerError(ErrorCode.NotFound, `no stored login for registry '${key}'`, { hint: "logins made with 'banger registry login' can be removed; docker config entries are not touched" });
    return { registry: key, removed };
  }
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
