import { KERNEL_FILES } from '../files.js';
import { copyFile, mkdir, readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Exec } from '../../core/exec.js';
import type { Logger } from '../../core/log.js';
import type { ProgressEvent } from '../../core/operation.js';
import { BangerError, ErrorCode, errorMessage } from '../../core/errors.js';
import { StepRunner } from '../../core/steps.js';
import { UndoStack } from '../../core/undo.js';
import { DebianArchive, debianArch, type DebRef } from './archive.js';
import { findKernelImage, findModulesDir, unpackDeb } from './deb.js';
import { download, fetchCached } from './download.js';
import type { ContentStore } from '../../core/content-store.js';
import type { HttpClient } from '../../core/http.js';
import { buildInitramfs } from './initramfs.js';
import { GUEST_MODULES, MOUNT_MODULES, resolveModules } from './modules.js';
import { buildModulesImage, MODULES_IMAGE } from '../modimage.js';
import { extractVmlinux } from './vmlinux.js';

/**
 * A catalog entry of kind "debian": the kernel is resolved from Debian's archive through the
 * signed InRelease → Packages → .deb chain, never a hard-coded ABI number.
 */
export interface DebianKernelEntry {
  name: string;
  kind: 'debian';
  distro: string;
  arch: string;
  /** Meta package whose dependency names the real kernel package, e.g. linux-image-cloud-amd64. */
  package: string;
  suite: string;
  component?: string;
  description: string;
  /** Approximate download size, for `kernel list --available`. */
  sizeBytes?: number;
  kernelVersion?: string;
}

export interface FetchDebianKernelOptions {
  entry: DebianKernelEntry;
  /** Archive mirror, e.g. http://deb.debian.org/debian (config debianMirror, else host apt sources). */
  mirror: string;
  /** Keyring used with gpgv to verify InRelease. */
  keyring: string;
  /** Empty staging directory to fill: vmlinuz, vmlinux, initrd.img, modules.ext4. */
  outDir: string;
  /** Scratch directory (removed by the caller). */
  tmpDir: string;
  exec: Exec;
  log: Logger;
  signal?: AbortSignal;
  progress?: (ev: ProgressEvent) => void;
  /**
   * Optional content store: verified .debs are kept there and reused on the next pull
   * ("used-cache"); their digests come back in `blobs`. Without it the .debs live in tmpDir only.
   */
  store?: ContentStore;
  /** HTTP client (deadlines, caps); default limits when absent. */
  http?: HttpClient;
}

export interface FetchDebianKernelResult {
  kernelVersion: string;
  /** e.g. "debian:linux-image-6.1.0-37-cloud-amd64@http://deb.debian.org/debian" */
  source: string;
  /** sha256 of the .deb that was verified. */
  debSha256: string;
  /** The real kernel package and its Debian version, e.g. linux-image-6.1.0-37-cloud-amd64 / 6.1.140-1. */
  package?: string;
  packageVersion?: string;
  /** Size in bytes of the initrd.img written. */
  initrdBytes?: number;
  /** Content-store blobs used (sha256:<hex> of the kernel and busybox .debs), when a store was given. */
  blobs?: string[];
}

/** Busybox for the initramfs comes from this package, through the same verified index. */
export const BUSYBOX_PACKAGE = 'busybox-static';

/**
 * Resolve, verify, unpack and build: fills `outDir` with `vmlinuz` (bzImage), `vmlinux` (ELF
 * extracted from it), `initrd.img` (banger's initramfs) and `modules.ext4` (every module, for the
 * guest's /lib/modules). Named steps (in progress events, logs and errors): verify-inrelease,
 * fetch-packages, resolve, download, unpack, vmlinux, initramfs, modules.
 * Chain of trust: InRelease (gpgv, config debianKeyring) → Packages sha256 → .deb sha256.
 * Errors: E_SIGNATURE (InRelease), E_DIGEST (Packages/.deb), E_NOT_FOUND (package/index/file),
 * E_HTTP, E_BUNDLE (unusable kernel), E_CANCELLED. On any failure outDir is left empty and
 * everything this function put in tmpDir is removed.
 */
export async function fetchDebianKernel(opts: FetchDebianKernelOptions): Promise<FetchDebianKernelResult> {
  const { entry, log } = opts;
  const progress = opts.progress ?? (() => {});
  const undo = new UndoStack((m, f) => log.warn(m, f));
  const steps = new StepRunner({ undo, signal: opts.signal, tag: (e, step) => fetchFailure(entry.name, step, e) });
  const work = join(opts.tmpDir, `debian-${process.pid}-${Date.now().toString(36)}`);
  try {
    const archive = await steps.run('verify-inrelease', async () => {
      const archive = await prepare(opts, work, steps, (message) => progress({ stage: steps.current ?? 'verify-inrelease', message }));
      progress({ stage: 'verify-inrelease', message: archive.inReleaseUrl });
      await archive.loadRelease();
      return archive;
    });
    await steps.run('fetch-packages', async () => {
      progress({ stage: 'fetch-packages' });
      await archive.loadPackages();
    });
    const [kernelDeb, busyboxDeb] = await steps.run('resolve', async () => {
      const debs = [await archive.resolveKernel(entry.package), await archive.resolve(BUSYBOX_PACKAGE)] as const;
      log.info('resolved Debian kernel', {
        entry: entry.name,
        meta: entry.package,
        package: debs[0].package,
        version: debs[0].version,
        sha256: debs[0].sha256,
      });
      progress({ stage: 'resolve', message: `${entry.package} → ${debs[0].package} ${debs[0].version}` });
      return debs;
    });
    const files = await steps.run('download', async () => [await fetchDeb(kernelDeb, work, opts), await fetchDeb(busyboxDeb, work, opts)] as const);
    const unpacked = await steps.run('unpack', () => unpackKernel(opts, work, kernelDeb, files, progress));
    const built = await buildBootFiles(opts, steps, unpacked, busyboxDeb, progress);
    log.info('built Debian kernel', { release: unpacked.img.release, ...built, stepMs: Object.fromEntries(steps.timings.map((t) => [t.name, t.ms])) });

    await rm(work, { recursive: true, force: true });
    undo.commit();
    return {
      kernelVersion: unpacked.img.release,
      source: `debian:${kernelDeb.package}=${kernelDeb.version}@${opts.mirror}`,
      debSha256: kernelDeb.sha256,
      package: kernelDeb.package,
      packageVersion: kernelDeb.version,
      initrdBytes: built.initrdBytes,
      blobs: opts.store ? [`sha256:${kernelDeb.sha256}`, `sha256:${busyboxDeb.sha256}`] : undefined,
    };
  } catch (e) {
    await undo.unwind();
    throw e;
  }
}

/**
 * How a failure of step `step` is reported (the runner's `tag`): a BangerError keeps its
 * message and gains `details.step` and `entry`; anything else is E_INTERNAL naming both.
 */
function fetchFailure(entryName: string, step: string, e: unknown): unknown {
  if (e instanceof BangerError) {
    if (e.details?.['step']) return e;
    const tagged = new BangerError(e.code, e.message, { hint: e.hint, cause: e.cause ?? e, details: { ...e.details, step, entry: entryName } });
    tagged.stack = e.stack;
    return tagged;
  }
  return new BangerError(ErrorCode.Internal, `kernel ${entryName}: step ${step} failed: ${errorMessage(e)}`, { cause: e, details: { step, entry: entryName } });
}

/** The scratch directory and the archive client; undo empties `outDir` of what this run added. */
async function prepare(opts: FetchDebianKernelOptions, work: string, steps: StepRunner, onWait: (message: string) => void): Promise<DebianArchive> {
  await mkdir(work, { recursive: true });
  steps.undo('remove scratch', () => rm(work, { recursive: true, force: true }));
  const outBefore = new Set(await readdir(opts.outDir).catch(() => [] as string[]));
  steps.undo('empty outDir', async () => {
    for (const n of await readdir(opts.outDir).catch(() => [] as string[]))
      if (!outBefore.has(n)) await rm(join(opts.outDir, n), { recursive: true, force: true });
  });
  const { entry } = opts;
  return new DebianArchive({
    mirror: opts.mirror,
    suite: entry.suite,
    component: entry.component ?? 'main',
    arch: debianArch(entry.arch),
    keyring: opts.keyring,
    tmpDir: work,
    exec: opts.exec,
    log: opts.log,
    signal: opts.signal,
    http: opts.http,
    onWait,
  });
}

interface Unpacked {
  img: Awaited<ReturnType<typeof findKernelImage>>;
  modDir: string;
  /** Where busybox-static was unpacked. */
  broot: string;
}

/** step unpack: both .debs unpacked; the kernel image and its modules found; vmlinuz copied out. */
async function unpackKernel(
  opts: FetchDebianKernelOptions,
  work: string,
  kernelDeb: DebRef,
  files: readonly [string, string],
  progress: (ev: ProgressEvent) => void,
): Promise<Unpacked> {
  progress({ stage: 'unpack', key: kernelDeb.package });
  const kroot = join(work, 'kernel');
  const broot = join(work, 'busybox');
  await unpackDeb(files[0], kroot, opts.exec, opts.signal);
  await unpackDeb(files[1], broot, opts.exec, opts.signal);
  const img = await findKernelImage(kroot, kernelDeb.package);
  const modDir = await findModulesDir(kroot, img.release, kernelDeb.package);
  await copyFile(img.vmlinuz, join(opts.outDir, KERNEL_FILES.vmlinuz));
  return { img, modDir, broot };
}

/** steps vmlinux, initramfs and modules: the ELF kernel, banger's initramfs and the modules disk. */
async function buildBootFiles(opts: FetchDebianKernelOptions, steps: StepRunner, u: Unpacked, busyboxDeb: DebRef, progress: (ev: ProgressEvent) => void) {
  const { exec, signal } = opts;
  const compression = await steps.run('vmlinux', async () => {
    progress({ stage: 'vmlinux' });
    return extractVmlinux(u.img.vmlinuz, join(opts.outDir, KERNEL_FILES.vmlinux), exec, signal);
  });
  const { modules, builtin, initrdBytes } = await steps.run('initramfs', async () => {
    progress({ stage: 'initramfs' });
    const { modules, builtin } = await resolveModules(u.modDir, GUEST_MODULES, exec, MOUNT_MODULES);
    const busybox = await readFile(join(u.broot, 'bin', 'busybox')).catch((e) => {
      throw new BangerError(ErrorCode.Bundle, `package ${BUSYBOX_PACKAGE} ${busyboxDeb.version} has no bin/busybox`, { cause: e });
    });
    const initrdBytes = await buildInitramfs({ busybox, kernelVersion: u.img.release, modules }, join(opts.outDir, KERNEL_FILES.initrd));
    progress({ stage: 'initramfs', done: true, message: `${modules.length} modules, ${initrdBytes} bytes` });
    return { modules, builtin, initrdBytes };
  });
  const modulesBytes = await steps.run('modules', async () => {
    progress({ stage: 'modules', message: 'all modules as a read-only disk for the guest (depmod + mkfs.ext4)' });
    const bytes = await buildModulesImage(exec, u.modDir, join(opts.outDir, MODULES_IMAGE), { signal });
    progress({ stage: 'modules', done: true, message: `${MODULES_IMAGE}, ${Math.round(bytes / 1048576)} MiB` });
    return bytes;
  });
  return { compression, modules: modules.map((m) => m.name), builtin, initrdBytes, modulesBytes };
}

/** Download one verified .deb (through the content store when configured); returns its path. */
async function fetchDeb(ref: DebRef, work: string, opts: FetchDebianKernelOptions): Promise<string> {
  const onBytes = (current: number, total?: number) => opts.progress?.({ stage: 'download', key: ref.package, current, total });
  const onWait = (message: string) => opts.progress?.({ stage: 'download', key: ref.package, message });
  const common = { what: `${ref.package} ${ref.version}`, sha256: ref.sha256, size: ref.size, signal: opts.signal, onBytes, onWait, http: opts.http };
  if (opts.store) {
    const { how, path } = await fetchCached(ref.url, opts.store, common);
    opts.log.info(`deb ${how}`, { package: ref.package, sha256: ref.sha256, url: ref.url });
    opts.progress?.({ stage: 'download', key: ref.package, done: true, message: how });
    return path;
  }
  const path = join(work, `${ref.package}.deb`);
  await download(ref.url, path, common);
  opts.progress?.({ stage: 'download', key: ref.package, done: true, message: 'downloaded' });
  return path;
}
