import { createHash, randomBytes } from 'node:crypto';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import { BangerError, ErrorCode, errorMessage, throwIfAborted } from '../core/errors.js';
import { toolEnv } from '../core/exec.js';
import { exists } from '../core/fsutil.js';
import { KeyedLock } from '../core/lock.js';
import type { Context } from '../core/context.js';
import type { ProgressEvent } from '../core/operation.js';
import type { VmmChoiceName } from '../core/vmm.js';
import { UndoStack } from '../core/undo.js';
import { firstBootScript, rootfsNeedsInstall, writeFirstBoot } from '../guest/prepare-disk.js';
import { parsePreparedPackages, type PreparedImages, type PreparedRecord } from '../images/prepared.js';
import type { ImageRecord } from '../core/shapes/image.js';
import type { KernelRecord } from '../kernels/record.js';
import { firstBootState, readFrom, tail } from './console.js';
import type { VmHandle, VmmDriver } from './drivers/types.js';
import type { VmFiles } from './files.js';
import { sleep } from './proc.js';
import { resolvePackageSource } from './package-source.js';
import { installProgress } from './readiness.js';
import type { VmRecord } from './store.js';

/**
 * Prepare once per image. An image whose first boot would install systemd and an SSH server
 * (a bare registry image such as docker.io's debian:bookworm) is booted once in a **builder
 * VM**: the image's kernel, a raw copy of the base (the base is never written) with this
 * build's first-boot script, a seed carrying `prepare` and the package mirror/proxy of the
 * request or config, NAT on (the install must reach its mirror). The first-boot script installs,
 * records the packages it added, scrubs what must differ per VM and reboots, which ends the VMM
 * (reboot=t, -no-reboot). The disk is moved (never parsed on the host: the guest wrote it) to
 * `layout.preparedDisk(image, id)` and recorded (images/prepared.ts); the builder VM (row, lease,
 * tap, NAT, directory) is removed. VMs of the image then stand on the prepared disk and boot
 * straight into systemd.
 *
 * Keyed on what decides the result (the image's content digest, the kernel and its vmlinux
 * digest, the first-boot script's sha256): a changed input prepares again, the same inputs
 * never do (unless `force`). One prepare per image at a time (a keyed lock): a second request
 * waits, says so, and then uses the first one's disk. A failure leaves no disk and no builder.
 */

/** What the prepare needs of the VM service (passed in: this file never imports service.ts). */
export interface PrepareHost {
  ctx: Context;
  images: { get(name: string): ImageRecord; prepared: PreparedImages };
  kernels: { get(name: string): KernelRecord; defaultName(): string };
  /** `VmService.create` for a builder (started, not waited for). */
  createBuilder(p: BuilderParams, op: { signal?: AbortSignal; progress?: (ev: ProgressEvent) => void }): Promise<VmRecord>;
  /** `VmService.rm([name], true)`: VMM killed, tap, NAT, lease, row, directory removed. */
  removeVm(name: string): Promise<void>;
  driver(kind: string): VmmDriver;
  handle(vm: Pick<VmRecord, 'id' | 'name'>): VmHandle;
  files(name: string): VmFiles;
  /** Prepared disks VMs stand on (VmUsage.baseDisksInUse). */
  baseDisksInUse(): string[];
}

/** The create parameters of a builder VM. */
export interface BuilderParams {
  image: string;
  name: string;
  kernel: string;
  nat: true;
  start: true;
  wait: false;
  vmm?: VmmChoiceName;
  packageMirror?: string;
  packageProxy?: string;
  memoryMiB: number;
  builder: true;
}

export interface PrepareParams {
  image: string;
  kernel?: string;
  packageMirror?: string;
  packageProxy?: string;
  force?: boolean;
  vmm?: VmmChoiceName;
}

export interface PrepareResult {
  image: string;
  /** The image needs the first-boot install (else nothing was done: it has systemd and sshd). */
  needed: boolean;
  /** This call prepared it (false: an earlier prepare with the same key is used). */
  prepared: boolean;
  /** This call waited for another request's prepare of the same image. */
  waited: boolean;
  record?: PreparedRecord;
}

/** Builders get at least this much memory: apt and dpkg need it. */
const BUILDER_MIN_MEMORY_MIB = 512;
/** The console line the first-boot script prints when the prepared disk is ready. */
const PREPARE_DONE = /banger-first-boot: prepare done/;

export class ImagePreparer {
  private readonly locks = new KeyedLock();
  /** rootfs (path, inode, mtime, size) → needs the first-boot install: debugfs once per image build. */
  private readonly needsCache = new Map<string, boolean>();

  constructor(private readonly host: PrepareHost) {}

  /** True when VMs of `rootfs` would install systemd and sshd on their first boot. */
  async needsInstall(rootfs: string): Promise<boolean> {
    const st = await stat(rootfs).catch(() => undefined);
    if (!st) return false;
    const key = `${rootfs}:${st.ino}:${st.mtimeMs}:${st.size}`;
    let v = this.needsCache.get(key);
    if (v === undefined) this.needsCache.set(key, (v = await rootfsNeedsInstall(this.host.ctx.exec, rootfs)));
    return v;
  }

  /** The key of a prepare: image content, kernel, first-boot script. */
  async key(image: ImageRecord, kernel: KernelRecord): Promise<string> {
    const script = await firstBootScript();
    const what = {
      v: 1,
      image: image.digest || `${image.rootfsPath}@${image.createdAt}`,
      kernel: kernel.name,
      vmlinux: kernel.vmlinuxSha256,
      script: script.sha256,
    };
    return createHash('sha256').update(JSON.stringify(what)).digest('hex');
  }

  /**
   * The base a VM of `image` stands on: the image's prepared disk when the image needs the
   * first-boot install (preparing it first when there is none for the current key, as stage
   * `prepare`), else undefined (the image's own base).
   */
  async baseFor(p: PrepareParams & { kernel: string }, op: { signal?: AbortSignal; progress?: (ev: ProgressEvent) => void }): Promise<string | undefined> {
    const image = this.host.images.get(p.image);
    if (this.host.ctx.config.firstBoot?.prepare === false) return undefined; // each VM installs in its own first boot
    if (!(await this.needsInstall(image.rootfsPath))) return undefined;
    const r = await this.prepare(p, op);
    return r.record?.diskPath;
  }

  /** `image prepare` (and the first create of an unprepared image). */
  async prepare(p: PrepareParams, op: { signal?: AbortSignal; progress?: (ev: ProgressEvent) => void } = {}): Promise<PrepareResult> {
    const t0 = Date.now();
    const stage = (message: string, done?: boolean) => op.progress?.({ stage: 'prepare', message, done, elapsedMs: Date.now() - t0 });
    const image = this.host.images.get(p.image);
    const kernel = this.host.kernels.get(p.kernel ?? image.kernelRef ?? this.host.kernels.defaultName());
    if (!(await this.needsInstall(image.rootfsPath))) return { image: image.name, needed: false, prepared: false, waited: false };
    const key = await this.key(image, kernel);
    const current = async () => {
      const r = this.host.images.prepared.find(image.name);
      return r && r.key === key && (await exists(r.diskPath)) ? r : undefined;
    };
    const have = p.force ? undefined : await current();
    if (have) return { image: image.name, needed: true, prepared: false, waited: false, record: have };
    const lockKey = `prepare:${image.name}`;
    const waited = this.locks.busy(lockKey);
    if (waited) stage(`waiting: another request is preparing image '${image.name}'`);
    return this.locks.run(
      lockKey,
      async () => {
        // A request that waited uses what the one before it made (the same key).
        const made = p.force && !waited ? undefined : await current();
        if (made) {
          stage(`image '${image.name}' was prepared by the other request (${(made.durationMs / 1000).toFixed(0)} s)`, true);
          return { image: image.name, needed: true, prepared: false, waited, record: made };
        }
        const record = await this.build(image, kernel, key, p, op, stage);
        return { image: image.name, needed: true, prepared: true, waited, record };
      },
      op.signal,
    );
  }

  /** One builder VM: create → wait for it to power off → check, move and record the disk. */
  private async build(
    image: ImageRecord,
    kernel: KernelRecord,
    key: string,
    p: PrepareParams,
    op: { signal?: AbortSignal; progress?: (ev: ProgressEvent) => void },
    stage: (message: string, done?: boolean) => void,
  ): Promise<PreparedRecord> {
    const { ctx } = this.host;
    const t0 = Date.now();
    const undo = new UndoStack((m, f) => ctx.log.warn(m, { image: image.name, ...f }));
    const end = this.host.images.prepared.begin(image.name);
    const name = `prepare-${randomBytes(4).toString('hex')}`;
    const { mirror, proxy } = resolvePackageSource(
      { mirror: p.packageMirror, proxy: p.packageProxy },
      { mirror: ctx.config.firstBoot?.packageMirror, proxy: ctx.config.firstBoot?.packageProxy },
    );
    stage(`builder VM ${name}: installing systemd and an SSH server into image '${image.name}' once${mirror ? ` from ${mirror}` : ''} (minutes under TCG)`);
    try {
      undo.push('builder', () => this.host.removeVm(name));
      const vm = await this.host.createBuilder(
        {
          image: image.name,
          name,
          kernel: kernel.name,
          nat: true,
          start: true,
          wait: false,
          vmm: p.vmm,
          packageMirror: mirror,
          packageProxy: proxy,
          memoryMiB: Math.max(ctx.config.vm.memoryMiB, BUILDER_MIN_MEMORY_MIB),
          builder: true,
        },
        { signal: op.signal, progress: (ev) => ev.stage !== 'prepare' && !ev.done && stage(`builder ${ev.stage}${ev.message ? `: ${ev.message}` : ''}`) },
      );
      await this.waitPowerOff(vm, op.signal, stage);

      // The builder's disk becomes the prepared disk. Its filesystem was written by the guest
      // (untrusted): no host tool parses it (no e2fsck, no debugfs as root on it); the guest
      // remounted it read-only before it rebooted, and ext4's journal covers a guest that did not.
      // What the install added comes from the console, parsed and bounded like all guest output.
      const disk = this.host.files(name).rootRaw;
      const packages = parsePreparedPackages(addedPackages((await readFrom(this.host.driver(vm.vmm).consolePath(this.host.handle(vm)), 0, 8 << 20)).data));
      const id = `${key.slice(0, 12)}-${Date.now().toString(36)}`;
      const final = ctx.layout.preparedDisk(image.name, id);
      await mkdir(ctx.layout.preparedDir(image.name), { recursive: true, mode: 0o700 });
      undo.push('prepared disk', () => rm(final, { force: true }));
      await rename(disk, final);
      const st = await stat(final);
      const record: PreparedRecord = {
        image: image.name,
        key,
        diskPath: final,
        sizeBytes: st.blocks * 512,
        kernel: kernel.name,
        ...(mirror ? { packageMirror: mirror } : {}),
        ...(proxy ? { packageProxy: proxy } : {}),
        packages,
        durationMs: Date.now() - t0,
        preparedAt: new Date().toISOString(),
      };
      throwIfAborted(op.signal);
      const old = this.host.images.prepared.record(record);
      undo.commit();
      await this.host.removeVm(name).catch((e) => ctx.log.warn('builder VM removal failed', { vm: name, error: errorMessage(e) }));
      if (old && !this.host.baseDisksInUse().includes(old.diskPath)) await rm(old.diskPath, { force: true });
      stage(`image '${image.name}' prepared in ${((Date.now() - t0) / 1000).toFixed(0)} s: ${packages.length} packages added`, true);
      return record;
    } catch (e) {
      const failures = await undo.unwind();
      if (failures.length) ctx.log.error('prepare unwind incomplete', { image: image.name, failures });
      throw e;
    } finally {
      end();
    }
  }

  /**
   * Follow the builder's console until its VMM exits: the install's lines as stage messages (one
   * every 3 s at most); a first-boot error fails at once with the guest's line and hint; an exit
   * without "prepare done", or no exit within vm.firstBootTimeoutSeconds, fails.
   */
  private async waitPowerOff(vm: VmRecord, signal: AbortSignal | undefined, stage: (message: string) => void): Promise<void> {
    const driver = this.host.driver(vm.vmm);
    const handle = this.host.handle(vm);
    const consoleLog = driver.consolePath(handle);
    const timeoutMs = this.host.ctx.config.vm.firstBootTimeoutSeconds * 1000;
    const start = Date.now();
    let lastLine = '';
    let lastShown = 0;
    for (;;) {
      if (signal?.aborted) throw new BangerError(ErrorCode.Cancelled, 'prepare cancelled');
      const running = (await driver.status(handle, vm.pid)).running;
      const text = (await readFrom(consoleLog, 0, 8 << 20)).data;
      const fb = firstBootState(text);
      if (fb.error) {
        throw new BangerError(ErrorCode.Vmm, `step prepare: the builder VM's first boot failed: banger-first-boot: error: ${fb.error}`, {
          hint: `${fb.hint ? `${fb.hint}; ` : ''}the builder VM is removed; fix the cause and run the create or 'banger image prepare' again`,
          details: { step: 'prepare', firstBootError: fb.error, firstBootHint: fb.hint, consoleTail: await tail(consoleLog) },
        });
      }
      if (!running) {
        if (PREPARE_DONE.test(text)) return;
        throw new BangerError(ErrorCode.Vmm, `step prepare: the builder VM stopped before the prepare finished`, {
          hint: 'its console is in the error details (consoleTail)',
          details: { step: 'prepare', consoleTail: await tail(consoleLog) },
        });
      }
      if (Date.now() - start > timeoutMs) {
        throw new BangerError(ErrorCode.Timeout, `step prepare: the builder VM did not finish within ${Math.round(timeoutMs / 1000)} s`, {
          hint: "raise config 'vm.firstBootTimeoutSeconds' on slow hosts",
          details: { step: 'prepare', consoleTail: await tail(consoleLog) },
        });
      }
      const line = installProgress(text);
      if (line && line !== lastLine && Date.now() - lastShown >= 3000) {
        lastLine = line;
        lastShown = Date.now();
        stage(line);
      }
      await sleep(500);
    }
  }

  /** The builder's root disk: a raw copy of the base (never written) with this build's first-boot script. */
  async builderDisk(baseRootfs: string, target: string, signal?: AbortSignal): Promise<void> {
    const { ctx } = this.host;
    // reflink where the filesystem can, else a sparse copy; the base is only read
    await ctx.exec(['cp', '--reflink=auto', '--sparse=always', baseRootfs, target], { env: toolEnv(), signal });
    await mkdir(ctx.layout.tmp, { recursive: true });
    await writeFirstBoot(ctx.exec, target, await firstBootScript(), ctx.layout.tmp);
  }
}

/** The "banger-first-boot: added NAME VERSION" lines of a builder's console, as "NAME VERSION" lines. */
export function addedPackages(consoleText: string): string {
  return [...consoleText.replace(/\r/g, '').matchAll(/^banger-first-boot: added ([^\n]*)$/gm)].map((m) => m[1]).join('\n');
}
