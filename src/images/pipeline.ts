import { mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BangerError, ErrorCode, throwIfAborted } from '../core/errors.js';
import { stepOf } from '../core/steps.js';
import { UndoStack } from '../core/undo.js';
import { injectGuestFiles } from '../guest/inject.js';
import { LayerApplier } from './apply.js';
import { buildExt4 } from './build.js';
import type { ImageBase, OpContext } from './image-base.js';
import type { ImageRecord } from './records.js';
import type { ImageConfig } from './registry/manifest.js';
import { BUILD_KEY_FILE, linkBuiltRootfs } from './reuse.js';
import { chooseStagingParent, isNoSpace, ramPrefix } from './staging.js';

/** What a pull or an import hands the build pipeline. */
export interface BuildSpec {
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

/** Build, staged in RAM when it fits; a RAM stage that runs full is retried on disk. */
export async function buildImage(ib: ImageBase, spec: BuildSpec, op: OpContext): Promise<ImageRecord> {
  const where = await chooseStagingParent({ mode: ib.ctx.config.imageStaging, diskTmp: ib.ctx.layout.tmp, estimateBytes: spec.estimateBytes, ramDir: ib.ramDir });
  try {
    return await buildIn(ib, spec, op, where.dir, where.ram);
  } catch (e) {
    if (!where.ram || !isNoSpace(e) || op.signal?.aborted) throw e;
    ib.ctx.log.warn('RAM staging ran out of space; building again on disk', { image: spec.name });
    op.progress?.({ stage: 'extract', message: 'RAM staging full: retrying on disk' });
    return buildIn(ib, spec, op, ib.ctx.layout.tmp, false);
  }
}

/** The shared build: stage → fill → finish → inject → mkfs → land → record. */
async function buildIn(ib: ImageBase, spec: BuildSpec, op: OpContext, stagingParent: string, ram: boolean): Promise<ImageRecord> {
  const signal = op.signal ?? new AbortController().signal;
  const progress = op.progress ?? (() => {});
  const log = ib.ctx.log.child({ op: 'image.build', image: spec.name });
  const undo = new UndoStack((m, f) => log.warn(m, f));
  let step = 'reserve';
  let t0 = Date.now();
  const stepDone = (name: string) => {
    log.info('step done', { step: name, ms: Date.now() - t0 });
    t0 = Date.now();
  };
  try {
    ib.reserveCheck(spec.name);
    ib.building.add(spec.name);
    undo.push('release name', () => void ib.building.delete(spec.name));

    step = 'stage';
    await mkdir(ib.ctx.layout.tmp, { recursive: true });
    const staging = await mkdtemp(join(stagingParent, ram ? `${ramPrefix(ib.ctx.layout.root)}image-${spec.name}-` : `image-${spec.name}-`));
    log.debug('staging', { dir: staging, ram });
    undo.push('remove staging dir', () => rm(staging, { recursive: true, force: true }));
    const rootDir = join(staging, 'rootfs');
    await mkdir(rootDir, { mode: 0o755 });

    // the ext4 is written on disk beside its final place (rename must not cross filesystems)
    const outParent = await mkdtemp(join(ib.ctx.layout.tmp, `image-${spec.name}-out-`));
    undo.push('remove build output dir', () => rm(outParent, { recursive: true, force: true }));
    const out = join(outParent, 'image');
    await mkdir(out);
    let reusedBytes: number | undefined;
    if (spec.buildKey) {
      const others = ib.repo.list().map((r) => ib.ctx.layout.imageDir(r.name));
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
      const applier = new LayerApplier(rootDir, { exec: ib.ctx.exec, signal, limits: ib.ctx.config.imageLimits });
      await spec.fill(rootDir, applier);
      throwIfAborted(signal);
      stepDone('layers');
      progress({ stage: 'extract', message: 'finishing (xattrs, directory times)' });
      await applier.finish();
      stepDone('finish');
      progress({ stage: 'extract', done: true, message: `${applier.entries} entries applied` });

      step = 'inject';
      throwIfAborted(signal);
      const inj = await injectGuestFiles(rootDir, { exec: ib.ctx.exec, log });
      log.info('guest files injected', { files: inj.injected.length });
      stepDone('inject');

      step = 'mkfs';
      progress({ stage: 'mkfs', message: 'building ext4 (mkfs.ext4 -d)' });
      built = await buildExt4(ib.ctx.exec, { dir: rootDir, out: join(out, 'rootfs.ext4'), sizeBytes: spec.sizeBytes, signal, onStage: (s) => progress({ stage: 'mkfs', message: s === 'fsck' ? 'checking (e2fsck -fn)' : 'building ext4 (mkfs.ext4 -d)' }) });
      progress({ stage: 'mkfs', done: true, total: built.sizeBytes, message: 'ext4 built and checked' });
      stepDone('mkfs');
    }
    if (spec.buildKey) await writeFile(join(out, BUILD_KEY_FILE), spec.buildKey + '\n');
    if (spec.rawConfig) await writeFile(join(out, 'config.json'), spec.rawConfig);
    throwIfAborted(signal);

    step = 'land';
    const final = ib.ctx.layout.imageDir(spec.name);
    await mkdir(ib.ctx.layout.images, { recursive: true });
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
    ib.repo.insert(rec, spec.blobs());
    undo.commit();
    ib.building.delete(spec.name);
    ib.background(Promise.all([rm(staging, { recursive: true, force: true }), rm(outParent, { recursive: true, force: true })]), 'remove staging dir');
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
