import { KERNEL_FILES } from '../files.js';
import { copyFile, mkdir, readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Exec } from '../../core/exec.js';
import type { Logger } from '../../core/log.js';
import type { ProgressEvent } from '../../core/operation.js';
import { BangerError, ErrorCode, errorMessage, throwIfAborted } from '../../core/errors.js';
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
  const { entry, exec, log, signal } = opts;
  const progress = opts.progress ?? (() => {});
  const undo = new UndoStack((m, f) => log.warn(m, f));
  let step = 'verify-inrelease';
  const timings: Record<string, number> = {};
  let mark = performance.now();
  /** Record how long the current step took and move on to `next`. */
  const advance = (next: string) => {
    const now = performance.now();
    timings[step] = Math.round(now - mark);
    mark = now;
    step = next;
  };
  const work = join(opts.tmpDir, `debian-${process.pid}-${Date.now().toString(36)}`);
  try {
    await mkdir(work, { recursive: true });
    undo.push('remove scratch', () => rm(work, { recursive: true, force: true }));
    const outBefore = new Set(await readdir(opts.outDir).catch(() => [] as string[]));
    undo.push('empty outDir', async () => {
      for (const n of await readdir(opts.outDir).catch(() => [] as string[])) if (!outBefore.has(n)) await rm(join(opts.outDir, n), { recursive: true, force: true });
    });
    const archive = new DebianArchive({
      mirror: opts.mirror,
      suite: entry.suite,
      component: entry.component ?? 'main',
      arch: debianArch(entry.arch),
      keyring: opts.keyring,
      tmpDir: work,
      exec,
      log,
      signal,
      http: opts.http,
      onWait: (message) => progress({ stage: step, message }),
    });
    progress({ stage: 'verify-inrelease', message: archive.inReleaseUrl });
    await archive.loadRelease();
    advance('fetch-packages');
    progress({ stage: 'fetch-packages' });
    await archive.loadPackages();
    advance('resolve');
    const kernelDeb = await archive.resolveKernel(entry.package);
    const busyboxDeb = await archive.resolve(BUSYBOX_PACKAGE);
    log.info('resolved Debian kernel', { entry: entry.name, meta: entry.package, package: kernelDeb.package, version: kernelDeb.version, sha256: kernelDeb.sha256 });
    progress({ stage: 'resolve', message: `${entry.package} → ${kernelDeb.package} ${kernelDeb.version}` });

    advance('download');
    const kernelFile = await fetchDeb(kernelDeb, work, opts);
    const busyboxFile = await fetchDeb(busyboxDeb, work, opts);

    advance('unpack');
    progress({ stage: 'unpack', key: kernelDeb.package });
    const kroot = join(work, 'kernel');
    const broot = join(work, 'busybox');
    await unpackDeb(kernelFile, kroot, exec, signal);
    await unpackDeb(busyboxFile, broot, exec, signal);
    const img = await findKernelImage(kroot, kernelDeb.package);
    const modDir = await findModulesDir(kroot, img.release, kernelDeb.package);
    await copyFile(img.vmlinuz, join(opts.outDir, KERNEL_FILES.vmlinuz));

    advance('vmlinux');
    throwIfAborted(signal);
    progress({ stage: 'vmlinux' });
    const format = await extractVmlinux(img.vmlinuz, join(opts.outDir, KERNEL_FILES.vmlinux), exec, signal);

    advance('initramfs');
    throwIfAborted(signal);
    progress({ stage: 'initramfs' });
    const { modules, builtin } = await resolveModules(modDir, GUEST_MODULES, exec, MOUNT_MODULES);
    const busybox = await readFile(join(broot, 'bin', 'busybox')).catch((e) => {
      throw new BangerError(ErrorCode.Bundle, `package ${BUSYBOX_PACKAGE} ${busyboxDeb.version} has no bin/busybox`, { cause: e });
    });
    const initrdBytes = await buildInitramfs({ busybox, kernelVersion: img.release, modules }, join(opts.outDir, KERNEL_FILES.initrd));
    progress({ stage: 'initramfs', done: true, message: `${modules.length} modules, ${initrdBytes} bytes` });

    advance('modules');
    throwIfAborted(signal);
    progress({ stage: 'modules', message: 'all modules as a read-only disk for the guest (depmod + mkfs.ext4)' });
    const modulesBytes = await buildModulesImage(exec, modDir, join(opts.outDir, MODULES_IMAGE), { signal });
    progress({ stage: 'modules', done: true, message: `${MODULES_IMAGE}, ${Math.round(modulesBytes / 1048576)} MiB` });
    advance('done');
    log.info('built Debian kernel', { release: img.release, compression: format, modules: modules.map((m) => m.name), builtin, initrdBytes, modulesBytes, stepMs: timings });

    await rm(work, { recursive: true, force: true });
    undo.commit();
    return {
      kernelVersion: img.release,
      source: `debian:${kernelDeb.package}=${kernelDeb.version}@${opts.mirror}`,
      debSha256: kernelDeb.sha256,
      package: kernelDeb.package,
      packageVersion: kernelDeb.version,
      initrdBytes,
      blobs: opts.store ? [`sha256:${kernelDeb.sha256}`, `sha256:${busyboxDeb.sha256}`] : undefined,
    };
  } catch (e) {
    await undo.unwind();
    if (e instanceof BangerError) {
      if (!e.details?.['step']) (e as { details?: Record<string, unknown> }).details = { ...e.details, step, entry: entry.name };
      throw e;
    }
    throw new BangerError(ErrorCode.Internal, `kernel ${entry.name}: step ${step} failed: ${errorMessage(e)}`, { cause: e, details: { step, entry: entry.name } });
  }
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
