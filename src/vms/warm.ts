import { randomBytes } from 'node:crypto';
import { mkdir, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BangerError, ErrorCode, errorMessage } from '../core/errors.js';
import type { VmmChoiceName } from '../core/vmm.js';
import { UndoStack } from '../core/undo.js';
import { specOf } from './boot.js';
import { createVm } from './create.js';
import { snapshotFiles } from './files.js';
import { planStart } from './start.js';
import type { OpContext, VmBase } from './vm-base.js';
import { du } from './paused-info.js';
import { listWarm, warmKey, type WarmInfo, type WarmSnapshot } from './warm-find.js';

export interface WarmParams {
  image: string;
  kernel?: string;
  vcpu?: number;
  memoryMiB?: number;
  vmm?: VmmChoiceName;
}

/**
 * `image warm`: a builder VM of the image (prepared first when it needs it) boots once with
 * this shape, its guest RAM in the snapshot's `memory` file (shared), to agent ready; its state
 * is saved (`then: exit`: RAM stays in the file, the stream holds device state only, the root
 * overlay is copied) into a temp directory beside the image's warm snapshots, which replaces
 * the shape's snapshot by rename once complete. The builder is removed either way. Nothing is
 * scrubbed in the guest: each restore gives it its own identity (restore.ts).
 */
export async function warmImage(vb: VmBase, p: WarmParams, op: OpContext = {}): Promise<WarmSnapshot> {
  const image = vb.deps.images.get(p.image);
  const kernel = p.kernel ?? image.kernelRef ?? vb.deps.kernels.defaultName();
  vb.deps.kernels.get(kernel);
  const choice = await vb.drivers.select(p.vmm ?? vb.ctx.config.vm.vmm, vb.host);
  const driver = vb.driver(choice.kind);
  const snaps = driver.features.snapshots ? driver.snapshots : undefined;
  if (!snaps) throw new BangerError(ErrorCode.Invalid, `the ${driver.kind} driver cannot save a VM's state: no warm snapshots with it`);
  const shape = { vmm: choice.kind, kernel, vcpu: p.vcpu ?? vb.ctx.config.vm.vcpu, memoryMiB: p.memoryMiB ?? vb.ctx.config.vm.memoryMiB };
  const key = warmKey(shape);
  const t0 = Date.now();
  const stage = (message: string, done?: boolean) => op.progress?.({ stage: 'warm', message, done, elapsedMs: Date.now() - t0 });
  return vb.locks.run(`warm:${image.name}`, async () => {
    const final = vb.ctx.layout.warmSnapshot(image.name, key);
    const tmp = `${final}.tmp-${randomBytes(4).toString('hex')}`;
    const to = snapshotFiles(tmp);
    const name = `warm-${randomBytes(4).toString('hex')}`;
    const undo = new UndoStack((m, f) => vb.ctx.log.warn(m, { image: image.name, ...f }));
    try {
      await mkdir(tmp, { recursive: true, mode: 0o700 });
      undo.push('warm-dir', () => rm(tmp, { recursive: true, force: true }));
      stage(`booting ${image.name} once (${shape.vcpu} vCPU, ${shape.memoryMiB} MiB, kernel ${kernel})`);
      undo.push('builder', () => vb.removeBuilder(name));
      await createVm(
        vb,
        { image: image.name, name, kernel, vcpu: shape.vcpu, memoryMiB: shape.memoryMiB, vmm: choice.kind, nat: false, warmBuilder: { memoryFile: to.memory } },
        op,
      );
      const vm = vb.get(name);
      const plan = await planStart(vb, vm);
      stage('saving memory and device state');
      // biome-ignore lint/suspicious/noThenProperty: the VmSnapshots.save option (a string, not a thenable)
      await snaps.save(plan.handle, await specOf(vb, plan), to, { then: 'exit', signal: op.signal });
      const info: WarmInfo = { image: image.name, shape: key, ...shape, baseDisk: vm.spec.baseDisk ?? null, createdAt: new Date().toISOString() };
      await writeFile(`${tmp}/warm.json`, JSON.stringify(info, null, 2) + '\n', { mode: 0o600 });
      await vb.removeBuilder(name);
      await rm(final, { recursive: true, force: true });
      await rename(tmp, final);
      undo.commit();
    } catch (e) {
      const failures = await undo.unwind();
      if (failures.length) vb.ctx.log.error('warm unwind incomplete', { image: image.name, failures: failures.map(errorMessage) });
      throw e;
    }
    const made = (await listWarm(vb.ctx.layout, image.name)).find((w) => w.shape === key);
    if (!made) throw new BangerError(ErrorCode.Internal, `warm snapshot of ${image.name} vanished after it was made`);
    const mib = (n: number) => (n / 2 ** 20).toFixed(1);
    stage(
      `warm in ${((Date.now() - t0) / 1000).toFixed(1)} s: state ${mib(made.bytes.state)} MiB, memory ${mib(made.bytes.memory)} MiB, disk ${mib(made.bytes.disk)} MiB`,
      true,
    );
    return made;
  });
}

/** Remove an image's warm snapshots (all, or one shape). */
export async function removeWarm(vb: VmBase, image: string, shape?: string): Promise<{ removed: string[] }> {
  const all = await listWarm(vb.ctx.layout, image);
  const gone = shape ? all.filter((w) => w.shape === shape) : all;
  for (const w of gone) await rm(w.dir, { recursive: true, force: true });
  if (!shape) await rm(vb.ctx.layout.warmDir(image), { recursive: true, force: true });
  return { removed: gone.map((w) => `${image}/${w.shape}`) };
}

/** Warm snapshots of images that no longer exist, or whose prepared disk is gone (useless: their overlay stands on it). */
export async function pruneWarm(vb: VmBase): Promise<{ removed: string[]; freedBytes: number }> {
  const removed: string[] = [];
  let freedBytes = 0;
  for (const image of await readdir(vb.ctx.layout.warm).catch(() => [] as string[])) {
    let exists = true;
    try {
      vb.deps.images.get(image);
    } catch {
      exists = false;
    }
    for (const d of await readdir(vb.ctx.layout.warmDir(image)).catch(() => [] as string[])) {
      const dir = join(vb.ctx.layout.warmDir(image), d);
      const w = d.includes('.tmp-') ? undefined : await listWarm(vb.ctx.layout, image).then((all) => all.find((x) => x.dir === dir));
      // A temp directory is a warm in progress (its lock) or a crash's leftover: only the latter goes.
      if (d.includes('.tmp-') && vb.locks.busy(`warm:${image}`)) continue;
      const stale =
        !exists ||
        !w ||
        (w.baseDisk !== null &&
          !(await stat(w.baseDisk).then(
            () => true,
            () => false,
          )));
      if (!stale) continue;
      freedBytes += await du(dir);
      await rm(dir, { recursive: true, force: true });
      removed.push(`${image}/${d}`);
    }
    if (!exists) await rm(vb.ctx.layout.warmDir(image), { recursive: true, force: true });
  }
  return { removed, freedBytes };
}
