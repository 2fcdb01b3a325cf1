import { mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BangerError, ErrorCode, throwIfAborted } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import type { ProgressEvent } from '../core/operation.js';
import { StepRunner, stepOf } from '../core/steps.js';
import { UndoStack } from '../core/undo.js';
import { injectGuestFiles } from '../guest/inject.js';
import { LayerApplier } from './apply.js';
import { buildExt4 } from './build.js';
import type { ImageBase, OpContext } from './image-base.js';
import type { ImageRecord } from './record.js';
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
  const where = await chooseStagingParent({
    mode: ib.ctx.config.imageStaging,
    diskTmp: ib.ctx.layout.tmp,
    estimateBytes: spec.estimateBytes,
    ramDir: ib.ramDir,
  });
  try {
    return await buildIn(ib, spec, op, where.dir, where.ram);
  } catch (e) {
    if (!where.ram || !isNoSpace(e) || op.signal?.aborted) throw e;
    ib.ctx.log.warn('RAM staging ran out of space; building again on disk', { image: spec.name });
    op.progress?.({ stage: 'extract', message: 'RAM staging full: retrying on disk' });
    return buildIn(ib, spec, op, ib.ctx.layout.tmp, false);
  }
}

/** Where a build writes: the staging tree it fills and the directory the ext4 goes to. */
interface BuildDirs {
  staging: string;
  rootDir: string;
  /** Parent of `out`, on disk beside the images (rename must not cross filesystems). */
  outParent: string;
  out: string;
}

/**
 * The shared build: reserve → stage → layers → inject → mkfs → land → record, each a named
 * step of one StepRunner (core/steps.ts). A failure is worded `image NAME: step STEP: …` with
 * `details.step` (an error already tagged by an inner step is kept as it is), a cancelled
 * signal is E_CANCELLED naming the step, and the undo stack leaves nothing behind.
 */
async function buildIn(ib: ImageBase, spec: BuildSpec, op: OpContext, stagingParent: string, ram: boolean): Promise<ImageRecord> {
  const signal = op.signal ?? new AbortController().signal;
  const progress = op.progress ?? (() => {});
  const log = ib.ctx.log.child({ op: 'image.build', image: spec.name });
  const undo = new UndoStack((m, f) => log.warn(m, f));
  const steps = new StepRunner({ undo, signal, log: (m, f) => log.info(m, f), tag: (e, step) => buildFailure(spec.name, step, e, signal) });
  try {
    await steps.run('reserve', () => {
      ib.reserveCheck(spec.name);
      ib.building.add(spec.name);
      steps.undo('release name', () => void ib.building.delete(spec.name));
    });
    const { dirs, reusedBytes } = await steps.run('stage', async () => {
      const dirs = await stageDirs(ib, spec, steps, stagingParent, ram, log);
      return { dirs, reusedBytes: spec.buildKey ? await reuseIdentical(ib, spec.buildKey, dirs.out, progress, log) : undefined };
    });
    const built = reusedBytes !== undefined ? { sizeBytes: reusedBytes } : await buildRootfs(ib, spec, dirs, steps, progress, log);
    const final = await steps.run('land', () => land(ib, spec, dirs.out, steps));
    const rec = await steps.run('record', () => {
      const r = record(spec, built.sizeBytes, final);
      ib.repo.insert(r, spec.blobs());
      return r;
    });
    undo.commit();
    ib.building.delete(spec.name);
    ib.background(
      Promise.all([rm(dirs.staging, { recursive: true, force: true }), rm(dirs.outParent, { recursive: true, force: true })]),
      'remove staging dir',
    );
    log.info('image ready', { digest: rec.digest, sizeBytes: rec.sizeBytes });
    return rec;
  } catch (e) {
    await undo.unwind();
    throw e;
  }
}

/** How a failure of build step `step` is reported (the runner's `tag`). */
function buildFailure(name: string, step: string, e: unknown, signal: AbortSignal): unknown {
  const cancelled = e instanceof BangerError && e.code === ErrorCode.Cancelled;
  if (signal.aborted && !cancelled)
    return new BangerError(ErrorCode.Cancelled, `image ${name}: cancelled during step ${step}`, { cause: e, details: { step } });
  if (e instanceof BangerError) {
    if (cancelled || stepOf(e) !== undefined) return e;
    return new BangerError(e.code, `image ${name}: step ${step}: ${e.message}`, { hint: e.hint, cause: e, details: { ...e.details, step } });
  }
  return new BangerError(ErrorCode.Internal, `image ${name}: step ${step}: ${(e as Error).message}`, { cause: e, details: { step } });
}

/** step stage: the staging tree (RAM or disk) and the output directory on disk, both undone. */
async function stageDirs(ib: ImageBase, spec: BuildSpec, steps: StepRunner, stagingParent: string, ram: boolean, log: Logger): Promise<BuildDirs> {
  await mkdir(ib.ctx.layout.tmp, { recursive: true });
  const staging = await mkdtemp(join(stagingParent, ram ? `${ramPrefix(ib.ctx.layout.root)}image-${spec.name}-` : `image-${spec.name}-`));
  log.debug('staging', { dir: staging, ram });
  steps.undo('remove staging dir', () => rm(staging, { recursive: true, force: true }));
  const rootDir = join(staging, 'rootfs');
  await mkdir(rootDir, { mode: 0o755 });

  // the ext4 is written on disk beside its final place (rename must not cross filesystems)
  const outParent = await mkdtemp(join(ib.ctx.layout.tmp, `image-${spec.name}-out-`));
  steps.undo('remove build output dir', () => rm(outParent, { recursive: true, force: true }));
  const out = join(outParent, 'image');
  await mkdir(out);
  return { staging, rootDir, outParent, out };
}

/** The ext4 of an identical earlier build, hard-linked into `out`; its size, or undefined. */
async function reuseIdentical(ib: ImageBase, key: string, out: string, progress: (ev: ProgressEvent) => void, log: Logger): Promise<number | undefined> {
  const others = ib.repo.list().map((r) => ib.ctx.layout.imageDir(r.name));
  const reusedBytes = await linkBuiltRootfs(others, key, out);
  if (reusedBytes !== undefined) {
    log.info('re-using the ext4 of an identical build', { buildKey: key });
    progress({ stage: 'mkfs', done: true, total: reusedBytes, message: 'identical build found: ext4 re-used' });
  }
  return reusedBytes;
}

/** steps layers (fill + finish), inject and mkfs: the tree, banger's guest files, the checked ext4. */
async function buildRootfs(
  ib: ImageBase,
  spec: BuildSpec,
  dirs: BuildDirs,
  steps: StepRunner,
  progress: (ev: ProgressEvent) => void,
  log: Logger,
): Promise<{ sizeBytes: number }> {
  const { rootDir, out } = dirs;
  const signal = steps.signal;
  await steps.run('layers', async () => {
    const applier = new LayerApplier(rootDir, { exec: ib.ctx.exec, signal, limits: ib.ctx.config.imageLimits });
    await spec.fill(rootDir, applier);
    throwIfAborted(signal);
    progress({ stage: 'extract', message: 'finishing (xattrs, directory times)' });
    await applier.finish();
    progress({ stage: 'extract', done: true, message: `${applier.entries} entries applied` });
  });
  await steps.run('inject', async () => {
    const inj = await injectGuestFiles(rootDir, { exec: ib.ctx.exec, log });
    log.info('guest files injected', { files: inj.injected.length });
  });
  return steps.run('mkfs', async () => {
    progress({ stage: 'mkfs', message: 'building ext4 (mkfs.ext4 -d)' });
    const built = await buildExt4(ib.ctx.exec, {
      dir: rootDir,
      out: join(out, 'rootfs.ext4'),
      sizeBytes: spec.sizeBytes,
      signal,
      onStage: (s) => progress({ stage: 'mkfs', message: s === 'fsck' ? 'checking (e2fsck -fn)' : 'building ext4 (mkfs.ext4 -d)' }),
    });
    progress({ stage: 'mkfs', done: true, total: built.sizeBytes, message: 'ext4 built and checked' });
    return built;
  });
}

/** step land: the build key and config beside the ext4, then `out` renamed into the image's directory. */
async function land(ib: ImageBase, spec: BuildSpec, out: string, steps: StepRunner): Promise<string> {
  if (spec.buildKey) await writeFile(join(out, BUILD_KEY_FILE), spec.buildKey + '\n');
  if (spec.rawConfig) await writeFile(join(out, 'config.json'), spec.rawConfig);
  throwIfAborted(steps.signal);
  const final = ib.ctx.layout.imageDir(spec.name);
  await mkdir(ib.ctx.layout.images, { recursive: true });
  await rm(final, { recursive: true, force: true }); // an orphan from a crash (no row exists)
  await rename(out, final);
  steps.undo('remove image dir', () => rm(final, { recursive: true, force: true }));
  return final;
}

function record(spec: BuildSpec, sizeBytes: number, final: string): ImageRecord {
  return {
    name: spec.name,
    sourceRef: spec.sourceRef,
    digest: spec.digest,
    platform: spec.platform,
    config: spec.config,
    sizeBytes,
    kernelRef: spec.kernelRef,
    rootfsPath: join(final, 'rootfs.ext4'),
    fromRegistry: spec.fromRegistry,
    createdAt: new Date().toISOString(),
  };
}
